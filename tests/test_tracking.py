import mlflow
import pytest

from facegan.config import TrackingParams
from facegan.tracking import flatten, numeric_metrics, stage_run


def test_flatten_and_numbers():
    tree = {"a": {"b": 1, "c": [1, 2], "d": {"e": 2.5, "f": True}}, "g": "x"}
    assert flatten(tree)["a.d.e"] == 2.5
    assert numeric_metrics(tree) == {"a.b": 1.0, "a.d.e": 2.5}


def test_stage_run_lands_at_dvc_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    with stage_run("ingest", {"ingest": {"sets": ["celeba"], "max": 3}}, TrackingParams()) as run:
        run.log_metrics({"celeba": {"kept": 7, "examples": {"x": ["a"]}}})
    assert (tmp_path / "mlflow.db").exists()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = client.get_run(run.run_id)
    assert got.data.tags["stage"] == "ingest" and got.data.tags["dvc_exp_name"] == "tiny-exp"
    assert got.data.params["ingest.max"] == "3" and got.data.metrics["celeba.kept"] == 7.0
    assert got.info.status == "FINISHED"


def test_disabled_tracking_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with stage_run("x", {}, TrackingParams(enabled=False)) as run:
        run.log_metrics({"a": 1})
    assert run.run_id is None and not (tmp_path / "mlflow.db").exists()
