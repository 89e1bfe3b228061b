"""Stage align: detect, landmark and crop faces -> data/aligned/<set>/."""
from facegan.faces.stage import run_align
from facegan.paths import project_root
from facegan.stage import run_stage

if __name__ == "__main__":
    root = project_root()
    run_stage("align", ["align"], lambda params, run: run_align(
        params.align, root / "data/raw", root / "data/aligned", root / "reports/data_quality/align.json"))
