"""The report stage on a small synthetic project: table cells, paper figures, MLflow links, the page in a browser."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import open_report
from facegan.config import TrackingParams
from facegan.report import PAPER_FIGURES, TABLE_COLUMNS, cell, write_report
from facegan.tracking import stage_run, tracking_uri

CGAN = {"fid": 130.0871, "kid": 0.1226, "kid_std": 0.004, "attr_acc": 0.9063, "attr_acc_Male": 0.95}
TPGAN = {"psnr": 17.9, "rank1_facenet_raw_with_distractors": {"0": 1.0, "45": 1.0, "90": 0.889},
         "rank1_facenet_frontalized_with_distractors": {"0": 0.333, "45": 0.167, "90": 0.0833},
         "rank1_dlib_raw_with_distractors": {"45": 0.875, "90": 0.028},
         "rank1_dlib_frontalized_with_distractors": {"45": 0.042, "90": 0.0}}


def png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(path)


def evaluated(root: Path, name: str, metrics: dict, columns: list[str]) -> None:
    (root / "reports/metrics").mkdir(parents=True, exist_ok=True)
    (root / f"reports/metrics/{name}.json").write_text(json.dumps(metrics))
    png(root / f"reports/eval/{name}/grid.png", 1)
    png(root / f"reports/train/{name}/samples/step_000002.png", 2)
    png(root / f"reports/train/{name}/samples/step_000004.png", 3)
    rows = ["step," + ",".join(columns) + ",img_per_s"] + [f"{s}," + ",".join(str(1 / s + i) for i in range(len(columns))) + ",10"
                                                          for s in (1, 2, 3, 4)]
    (root / f"reports/train/{name}/losses.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """cgan and tpgan evaluated, fader not; an MLflow store where cgan's numbers were logged once,
    then a later evaluate run logged other numbers (a run the JSON no longer reflects)."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    evaluated(tmp_path, "cgan", CGAN, ["loss_d", "loss_g"])
    (tmp_path / "models/cgan").mkdir(parents=True)
    (tmp_path / "models/cgan/model.json").write_text(json.dumps({"steps": 638, "minutes_this_run": 4.01}))
    evaluated(tmp_path, "tpgan", TPGAN, ["loss_pixel"])
    (tmp_path / "reports/data_quality.json").write_text(json.dumps({"sets": {"celeba": {"skipped_total": 3, "stages": {
        "ingest": {"read": 10, "kept": 7, "skipped": 3, "skipped_by_reason": {"undecodable_image": 3}}}}}}))
    settings = TrackingParams(enabled=True, experiment="facegan")
    runs = {}
    for stage, metrics in (("train@cgan", {"loss_g": 1.0}), ("evaluate@cgan", CGAN),
                           ("evaluate@cgan", {**CGAN, "fid": 99.0}), ("evaluate@tpgan", TPGAN)):
        with stage_run(stage, {}, settings) as run:
            run.log_metrics(metrics)
        runs.setdefault(stage, []).append(run.run_id)
    return tmp_path, runs


def test_report_links_each_row_to_the_run_that_logged_its_numbers(project):
    root, runs = project
    counts = write_report(root, ["cgan", "fader", "tpgan"], tracking_uri(root), "facegan")
    assert counts == {"methods_evaluated": 2, "methods_linked_to_mlflow": 2, "images": 4}
    summary = (root / "reports/summary.md").read_text()
    cgan_row = next(line for line in summary.splitlines() if line.startswith("| cgan |"))
    assert "| 130 | 0.123 |" in cgan_row and "| 0.906 |" in cgan_row and "| 638 steps, 4.01 min last run |" in cgan_row
    assert runs["evaluate@cgan"][0] in cgan_row and runs["evaluate@cgan"][1] not in summary  # 99.0 is not in the JSON
    assert f"train run `{runs['train@cgan'][0]}`" in summary
    assert "| fader |" in summary and "not evaluated" in summary and "dvc repro evaluate@fader" in summary
    assert "90°: 0.889 → 0.0833 · 45°: 1 → 0.167" in summary
    assert "| 8.3 % |" in summary and "| 16.7 % |" in summary       # ours beside TP-GAN's 64.03 % and 98.58 %
    assert "| celeba | ingest | 10 | 7 | 3 | undecodable_image: 3 |" in summary
    assert "![cgan grid](eval/cgan/grid.png)" in summary and "step_000004" in summary and "step_000002" not in summary
    headline = json.loads((root / "reports/headline.json").read_text())
    assert headline["cgan"] == {"fid": CGAN["fid"], "kid": CGAN["kid"], "attr_acc": CGAN["attr_acc"]}
    assert headline["tpgan"]["rank1_facenet_raw_with_distractors"] == {"45": 1.0, "90": 0.889}
    assert "fader" not in headline


def test_report_without_mlflow_says_so(project):
    root, _ = project
    write_report(root, ["cgan"], None, "facegan")
    assert "not found in MLflow" in (root / "reports/summary.md").read_text()


def test_cells_and_paper_figures_name_real_metrics():
    from facegan.methods import REGISTRY, Metric

    assert cell(None, Metric("fid", "lower")) == "not evaluated" and cell({"fid": 1.0}, None) == "–"
    assert cell({"a": 0.5, "b": 0.9}, Metric("a", "higher", beside="b")) == "0.5 / 0.9"
    for method, figures in PAPER_FIGURES.items():
        for figure in figures:   # "ours" is one of the method's declared headline figures
            assert figure.what and figure.paper and figure.differs
            assert figure.ours is None or figure.ours in REGISTRY[method].headline_keys(), (method, figure.ours)
    # every method fills at least one column of the table, and each column's title says which way is better
    assert {m for _, specs in TABLE_COLUMNS for m in specs} == set(REGISTRY)
    assert [title for title, _ in TABLE_COLUMNS][:2] == ["FID ↓", "KID ↓"]


def test_report_page_in_a_headless_browser(project):
    root, runs = project
    write_report(root, ["cgan", "fader", "tpgan"], tracking_uri(root), "facegan")
    page = open_report(root / "reports/index.html")
    assert page["title"] == "facegan report"
    assert [r["method"] for r in page["rows"]] == ["cgan", "fader", "tpgan"]
    cgan = page["rows"][0]["cells"]
    assert cgan[0] == "130" and runs["evaluate@cgan"][0] in cgan[-1] and runs["train@cgan"][0] in cgan[-1]
    assert all(c == "not evaluated" for c in page["rows"][1]["cells"][:-2])
    assert page["rows"][1]["cells"][-2] == "not trained" and cgan[-2] == "638 steps, 4.01 min last run"
    assert len(page["images"]) == 4 and all(img["complete"] and img["width"] == 64 for img in page["images"])
    assert page["svgs"] == 2 and page["papers"] == sum(len(PAPER_FIGURES[m]) for m in ("cgan", "fader", "tpgan"))
    assert page["quality"] == 1
    html = (root / "reports/index.html").read_text()
    assert not re.search(r"(src|href)=['\"](?!data:|#)", html), "the page must not load anything from outside itself"
