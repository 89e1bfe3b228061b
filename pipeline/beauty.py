"""Stage beauty: one predictor per rater on the rated faces -> models/beauty/, reports/metrics/beauty.json."""
from facegan.beauty.stage import run_beauty
from facegan.paths import project_root
from facegan.reports import write_metrics
from facegan.stage import run_stage


def body(params, run):
    root = project_root()
    return write_metrics(root, "beauty", run_beauty(params.beauty, params.features, params.align, root))


if __name__ == "__main__":
    run_stage("beauty", ["beauty"], body)
