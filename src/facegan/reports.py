"""Metric files under reports/metrics/ (DVC metrics, read by `dvc exp show`)."""
from __future__ import annotations

import json
from pathlib import Path


def write_metrics(root: Path, name: str, metrics: dict) -> dict:
    path = Path(root) / "reports" / "metrics" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    return metrics
