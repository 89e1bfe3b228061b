"""Stage render_avatars: seeded python-avatars cartoons -> data/avatars/."""
import shutil

from facegan.data.avatars import run_render_avatars
from facegan.data.quality import write_part
from facegan.paths import project_root
from facegan.stage import run_stage


def body(params, run):
    root = project_root()
    out = root / "data/avatars"
    shutil.rmtree(out, ignore_errors=True)
    quality = run_render_avatars(params.render_avatars, out)
    quality.write_skipped(out / "skipped.csv")
    return write_part(root / "reports/data_quality/render_avatars.json", "render_avatars", {"avatars": quality})


if __name__ == "__main__":
    run_stage("render_avatars", ["render_avatars"], body)
