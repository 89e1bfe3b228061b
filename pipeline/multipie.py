"""Stage multipie: the Multi-PIE release -> data/multipie/ (manifest, pairs.csv, landmarks.npz)."""
from facegan.data.multipie import run_multipie
from facegan.paths import mirror_root, project_root
from facegan.stage import run_stage

if __name__ == "__main__":
    root = project_root()
    run_stage("multipie", ["data", "multipie"],
              lambda params, run: run_multipie(params, mirror_root(params.data.mirror), root))
