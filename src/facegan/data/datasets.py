"""In-memory image sets from the pipeline's manifests (the sets here are small)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facegan.data.images import load_rgb
from facegan.data.manifest import read_manifest

# Where each image set lives below the project root.
SET_FOLDERS = {"avatars": "data/avatars", "emoji": "data/raw/emoji"}


def set_folder(root: Path, name: str) -> Path:
    """data/aligned/<name>, or the folder of a set that is made or drawn, not aligned (avatars, emoji)."""
    return root / SET_FOLDERS.get(name, f"data/aligned/{name}")


def load_images(folder: Path, splits: list[str] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """(N, H, W, 3) uint8 and the manifest rows, optionally only some splits."""
    frame = read_manifest(folder)
    if splits:
        frame = frame[frame["split"].isin(splits)].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"{folder}: no images in splits {splits}")
    images = np.stack([load_rgb(folder / p) for p in frame["path"]])
    return images, frame


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], the convention of every network here."""
    if not images.flags.writeable:   # a view of a decoded PIL image: torch warns on read-only memory
        images = images.copy()
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def celeba_attributes(root: Path, attributes: list[str], split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Aligned CelebA faces of one split, their 0/1 values of `attributes` (N, A), and the manifest rows."""
    images, frame = load_images(set_folder(root, "celeba"), [split])
    missing = [name for name in attributes if name not in frame.columns]
    if missing:
        raise KeyError(f"{set_folder(root, 'celeba')}/manifest.csv has no column {missing[0]!r} "
                       f"(attributes: {', '.join(attributes)})")
    return images, frame[list(attributes)].to_numpy(), frame


def faces_with_landmarks(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Aligned CelebA faces of one split, their 68 landmarks in crop pixels (N, 68, 2), and the
    manifest rows. Faces without landmarks (none in `landmarks` mode) raise, naming the file."""
    folder = set_folder(root, "celeba")
    images, frame = load_images(folder, [split])
    with np.load(folder / "landmarks.npz", allow_pickle=False) as f:
        position = {path: i for i, path in enumerate(f["path"].astype(str))}
        aligned = f["aligned"]
    missing = [p for p in frame["path"] if p not in position]
    if missing:
        raise ValueError(f"{folder}/landmarks.npz has no row for {missing[0]} ({len(missing)} in all): "
                         "run `dvc repro align`")
    landmarks = aligned[[position[p] for p in frame["path"]]].astype(np.float32)
    bad = np.isnan(landmarks).any(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{folder}: {int(bad.sum())} {split} faces have no landmarks "
                         f"(first: {frame['path'][int(np.argmax(bad))]})")
    return images, landmarks, frame
