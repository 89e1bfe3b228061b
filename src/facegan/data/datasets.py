"""Stored image sets: the pipeline's own images, one array file per set.

A stage that makes images (align, render_avatars, multipie) writes its set as
`manifest.csv` (one row per image) beside `images.npy`, a uint8 (N, H, W, 3)
array whose row i is the manifest's row i, and `contact_sheet.png` to look at.
Every stage reads the array in about a second, and DVC tracks three files per
set instead of ten thousand (a no-op `dvc repro` re-walks every dependency).
The manifest's `path` names the image (its source file's stem); the files
users bring (the mirror's releases, photos for the CLI) stay ordinary images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facegan.data.manifest import read_manifest, write_manifest

# Where each image set lives below the project root.
SET_FOLDERS = {"avatars": "data/avatars", "emoji": "data/raw/emoji"}


def set_folder(root: Path, name: str) -> Path:
    """data/aligned/<name>, or the folder of a set that is made or drawn, not aligned (avatars, emoji)."""
    return root / SET_FOLDERS.get(name, f"data/aligned/{name}")


ARRAY = "images.npy"
CONTACT_SHEET = "contact_sheet.png"


def write_image_set(folder: Path, frame: pd.DataFrame, images: np.ndarray, sheet_columns: int = 32) -> None:
    """manifest.csv, images.npy (row i = manifest row i) and a contact sheet of the first images."""
    images = np.asarray(images, np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(frame):
        raise ValueError(f"{folder}: {len(frame)} manifest rows but images of shape {images.shape} "
                         "(expected N x H x W x 3, one per row)")
    write_manifest(frame.reset_index(drop=True), folder)
    np.save(folder / ARRAY, images)
    shown = images[:sheet_columns * 8]
    if len(shown):
        rows = -(-len(shown) // sheet_columns)
        h, w = shown.shape[1:3]
        sheet = np.full((rows * h, min(len(shown), sheet_columns) * w, 3), 255, np.uint8)
        for k, image in enumerate(shown):
            r, c = divmod(k, sheet_columns)
            sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
        from PIL import Image

        Image.fromarray(sheet).save(folder / CONTACT_SHEET)


def read_image_set(folder: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Every image of a stored set (a read-only memory map: index it to copy rows) and its manifest.
    A set of files (an ingested release used as it is: data/raw/emoji) is decoded file by file."""
    frame = read_manifest(folder)
    path = Path(folder) / ARRAY
    if not path.exists():
        if not len(frame) or not (Path(folder) / str(frame["path"].iloc[0])).is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro` for the stage that writes {folder}")
        from facegan.data.images import load_rgb

        return np.stack([load_rgb(Path(folder) / p) for p in frame["path"]]), frame
    images = np.load(path, mmap_mode="r")
    if images.ndim != 4 or images.shape[0] != len(frame) or images.dtype != np.uint8:
        raise ValueError(f"{path}: {images.dtype} array of shape {images.shape} does not match "
                         f"{folder}/manifest.csv ({len(frame)} rows of H x W x 3 uint8): run `dvc repro` again")
    return images, frame


def load_images(folder: Path, splits: list[str] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """(N, H, W, 3) uint8 and the manifest rows of a stored set, optionally only some splits."""
    images, frame = read_image_set(folder)
    rows = np.arange(len(frame)) if not splits else np.flatnonzero(frame["split"].isin(splits).to_numpy())
    if len(rows) == 0:
        raise ValueError(f"{folder}: no images in splits {splits}")
    return np.ascontiguousarray(images[rows]), frame.iloc[rows].reset_index(drop=True)


def rows_of(frame: pd.DataFrame, paths) -> np.ndarray:
    """The manifest rows of the named images, in the order asked; an unknown name raises."""
    position = {path: i for i, path in enumerate(frame["path"].astype(str))}
    missing = [p for p in paths if p not in position]
    if missing:
        raise KeyError(f"no image named {missing[0]!r} in the set ({len(missing)} unknown)")
    return np.array([position[p] for p in paths], dtype=np.int64)


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
