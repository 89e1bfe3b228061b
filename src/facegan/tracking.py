"""MLflow tracking: one run per stage execution, in a sqlite store at the repository root.

The store is anchored at $DVC_ROOT when DVC sets it: a queued `dvc exp run`
executes in a temporary copy, where a relative URI would lose the run.
`mlflow ui --backend-store-uri sqlite:///mlflow.db` (from the root) shows them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Iterator

from facegan.config import TrackingParams
from facegan.paths import home_root, project_root

log = logging.getLogger(__name__)


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_metrics(tree: dict) -> dict[str, float]:
    """The numbers of a nested report, flattened to MLflow metric names."""
    return {k: float(v) for k, v in flatten(tree).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class StageRun:
    """What a stage logs to; a no-op when tracking is disabled."""

    def __init__(self, mlflow=None):
        self._mlflow = mlflow
        self.run_id = mlflow.active_run().info.run_id if mlflow else None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self._mlflow and metrics:
            self._mlflow.log_metrics(numeric_metrics(metrics), step=step)

    def log_artifact(self, path: Path) -> None:
        if self._mlflow and Path(path).exists():
            self._mlflow.log_artifact(str(path))


def tracking_uri(root: Path | None = None) -> str:
    return f"sqlite:///{(root or home_root()) / 'mlflow.db'}"


@contextlib.contextmanager
def stage_run(stage: str, params: dict, settings: TrackingParams) -> Iterator[StageRun]:
    if not settings.enabled:
        yield StageRun()
        return
    import mlflow

    root = home_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    experiment_id = (experiment.experiment_id if experiment else
                     mlflow.create_experiment(settings.experiment, artifact_location=(root / "mlruns").as_uri()))
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage):
        mlflow.set_tags({
            "stage": stage,
            "dvc_stage": os.environ.get("DVC_STAGE", stage),
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "git_commit": git_commit(project_root()),
        })
        mlflow.log_params({k: str(v) for k, v in flatten(params).items()})
        run = StageRun(mlflow)
        log.info("MLflow run %s (%s)", run.run_id, tracking_uri(root))
        yield run
