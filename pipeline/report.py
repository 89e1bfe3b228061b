"""Stage report: reports/summary.md and the self-contained reports/index.html over every method."""
from facegan.methods import REGISTRY
from facegan.paths import home_root, project_root
from facegan.report import write_report
from facegan.stage import run_stage
from facegan.tracking import tracking_uri


def report(params, run):
    uri = tracking_uri(home_root()) if params.tracking.enabled else None
    return write_report(project_root(), list(REGISTRY), uri, params.tracking.experiment)


if __name__ == "__main__":
    run_stage("report", ["tracking"], report)
