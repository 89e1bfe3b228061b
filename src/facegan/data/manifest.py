"""Manifests (one row per image: path, identity, split, labels) and splits."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from facegan.config import SplitParams

FIRST_COLUMNS = ["path", "identity", "split"]
MANIFEST = "manifest.csv"


def identity_split(identities: Iterable, fractions: SplitParams, seed: int) -> dict:
    """Seeded identity-disjoint split: every photo of a person lands in one split."""
    unique = sorted(set(map(str, identities)))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(round(fractions.train * len(unique)))
    n_val = int(round(fractions.val * len(unique)))
    if fractions.test > 0 and n_train + n_val >= len(unique) and len(unique) > 2:
        n_train -= 1  # keep at least one test identity when a test split is asked for
    names = {}
    for rank, idx in enumerate(order):
        names[unique[idx]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return names


def assign_splits(frame: pd.DataFrame, fractions: SplitParams, seed: int) -> pd.DataFrame:
    splits = identity_split(frame["identity"], fractions, seed)
    frame = frame.copy()
    frame["split"] = frame["identity"].astype(str).map(splits)
    return frame


def write_manifest(frame: pd.DataFrame, folder: Path) -> Path:
    missing = [c for c in FIRST_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"manifest for {folder} lacks columns {missing}")
    folder.mkdir(parents=True, exist_ok=True)
    ordered = frame[FIRST_COLUMNS + [c for c in frame.columns if c not in FIRST_COLUMNS]]
    path = folder / MANIFEST
    ordered.to_csv(path, index=False)
    return path


def read_manifest(folder: Path) -> pd.DataFrame:
    """Manifest rows; `path` is a file relative to the manifest's folder (ingested releases) or the
    image's name in the set's images.npy (stored sets: data/datasets.py)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro` for the stage that writes it")
    return pd.read_csv(path, dtype={"identity": str, "path": str, "raw_path": str})
