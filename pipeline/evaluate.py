"""Stage evaluate@<method>: the shared evaluation -> reports/metrics/<method>.json, reports/eval/<method>/."""
import sys

from facegan.devices import resolve_device
from facegan.paths import project_root
from facegan.reports import write_metrics
from facegan.stage import run_stage
from facegan.train.loop import load_trained


def body(name):
    def evaluate(params, run):
        root = project_root()
        method = load_trained(name, root, resolve_device(params.train.common.device))
        result = method.evaluate(root, params.eval, root / "reports" / "eval" / name)
        for artifact in sorted((root / "reports" / "eval" / name).glob("*.png")):
            run.log_artifact(artifact)
        return write_metrics(root, name, result)
    return evaluate


if __name__ == "__main__":
    run_stage(f"evaluate@{sys.argv[1]}", ["eval"], body(sys.argv[1]))
