"""Stage pseudo_label: the per-rater predictors rate every aligned CelebA face -> data/pseudo_labels/."""
from facegan.beauty.stage import run_pseudo_label
from facegan.paths import project_root
from facegan.reports import write_metrics
from facegan.stage import run_stage


def body(params, run):
    root = project_root()
    report = run_pseudo_label(params.pseudo_label, params.beauty, params.align, root)
    run.log_artifact(root / "reports" / "beauty" / f"pseudo_beauty_{params.pseudo_label.set}.png")
    return write_metrics(root, "pseudo_label", report)


if __name__ == "__main__":
    run_stage("pseudo_label", ["pseudo_label", "beauty"], body)
