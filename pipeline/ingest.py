"""Stage ingest: public releases in the mirror -> data/raw/<set>/."""
from facegan.data.ingest import run_ingest
from facegan.paths import project_root
from facegan.stage import run_stage

if __name__ == "__main__":
    root = project_root()
    run_stage("ingest", ["data", "ingest"],
              lambda params, run: run_ingest(params, root / "data/raw", root / "reports/data_quality/ingest.json"))
