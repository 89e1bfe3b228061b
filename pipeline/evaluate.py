"""Stage evaluate@<method>: the shared evaluation -> reports/metrics/<method>.json, reports/eval/<method>/."""
import sys

from facegan.devices import resolve_device
from facegan.evaluation import EvalContext
from facegan.paths import project_root
from facegan.reports import write_metrics
from facegan.stage import run_stage
from facegan.train.loop import load_trained


def body(name):
    def evaluate(params, run):
        root = project_root()
        device = resolve_device(params.train.common.device)
        method = load_trained(name, root, device)
        report_dir = root / "reports" / "eval" / name
        context = EvalContext(root, report_dir, params.eval, getattr(params.evaluate, name), params.align, device)
        result = method.evaluate(context)
        for artifact in sorted(report_dir.glob("*.png")):
            run.log_artifact(artifact)
        return write_metrics(root, name, result)
    return evaluate


if __name__ == "__main__":
    run_stage(f"evaluate@{sys.argv[1]}", ["eval", f"evaluate.{sys.argv[1]}"], body(sys.argv[1]))
