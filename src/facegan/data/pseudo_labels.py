"""The beta vectors stage `pseudo_label` writes (data/pseudo_labels/<set>.npz), as Beholder-GAN reads them."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def pseudo_label_path(root: Path, name: str) -> Path:
    return Path(root) / "data" / "pseudo_labels" / f"{name}.npz"


def load_pseudo_labels(root: Path, name: str = "celeba") -> dict:
    path = pseudo_label_path(root, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro pseudo_label`")
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}
