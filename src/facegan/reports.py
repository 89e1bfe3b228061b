"""Metric files under reports/metrics/ (DVC metrics, read by `dvc exp show`)."""
from __future__ import annotations

import json
from pathlib import Path


def format_value(value) -> str:
    """A metric for one line: numbers to 3 significant digits, per-group dicts as key=value."""
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def headline(root: Path, method: str, keys: list[str]) -> dict | None:
    """The figures `keys` (a method's headline_keys()) from reports/metrics/<method>.json, or None before
    evaluation."""
    path = Path(root) / "reports" / "metrics" / f"{method}.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return {key: metrics[key] for key in keys if key in metrics}


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


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure to `path` (PNG, 100 dpi, tight), its folder made; the figure closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
