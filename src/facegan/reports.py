"""Metric files under reports/metrics/ (DVC metrics, read by `dvc exp show`)."""
from __future__ import annotations

import json
from pathlib import Path


# The figures that say most about each method, in reports/metrics/<method>.json (issue 10's summary
# table and `facegan info` read them); a ceiling or floor follows the figure it qualifies.
HEADLINE_METRICS = {
    "cgan": ("fid", "kid", "attr_acc"),
    "beholder": ("fid", "beauty_spearman", "beautify_rise_rate", "identity_acc_beautified", "identity_ceiling"),
    "fader": ("reconstruction_psnr", "swap_acc", "fid", "identity_acc_reconstruction", "identity_ceiling"),
    "dtn": ("f_constancy", "retrieval_rank1", "identity_acc", "identity_ceiling", "fid"),
    "tpgan": ("psnr", "rank1_facenet_raw_with_distractors", "rank1_facenet_frontalized_with_distractors",
              "rank1_dlib_raw_with_distractors", "rank1_dlib_frontalized_with_distractors"),
    "geogan": ("transfer_success", "identity_acc", "identity_ceiling", "landmark_error_before",
               "landmark_error_after_flow", "fid"),
}


def format_value(value) -> str:
    """A metric for one line: numbers to 3 significant digits, per-group dicts as key=value."""
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def headline(root: Path, method: str) -> dict | None:
    """The method's headline figures from reports/metrics/<method>.json, or None before evaluation."""
    path = Path(root) / "reports" / "metrics" / f"{method}.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return {key: metrics[key] for key in HEADLINE_METRICS.get(method, ()) if key in metrics}


def write_metrics(root: Path, name: str, metrics: dict) -> dict:
    path = Path(root) / "reports" / "metrics" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    return metrics


def save_labelled_grid(images, row_labels: list[str], path: Path, per_row: int) -> None:
    """A grid of (N, 3, H, W) images in [-1, 1], `per_row` to a row, each row named on its left."""
    import numpy as np
    from PIL import Image, ImageDraw

    from facegan.data.datasets import to_uint8

    tiles = to_uint8(images)
    h, w = tiles.shape[1:3]
    margin = 8 + 7 * max(len(label) for label in row_labels)
    canvas = Image.new("RGB", (margin + per_row * w, len(row_labels) * h), "white")
    draw = ImageDraw.Draw(canvas)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, per_row)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (margin + column * w, row * h))
    for row, label in enumerate(row_labels):
        draw.text((4, row * h + h // 2 - 5), label, fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
