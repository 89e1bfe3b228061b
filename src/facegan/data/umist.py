"""UMIST importer: UMIST.mat with `x` (112 x 92 x N uint8 grey) and `label` (subject 1..20).

Each subject's images come in the order of its turn from full profile towards
frontal, so the index within the subject's sequence is the only pose label.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
from PIL import Image

from facegan.config import SourceParams
from facegan.data.quality import DataError, SetQuality

MAT_FILE = "UMIST.mat"


def load_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable MATLAB file ({err})") from None
    for key in ("x", "label"):
        if key not in mat:
            raise DataError(f"{path}: variable '{key}' missing; found {[k for k in mat if not k.startswith('__')]}")
    images, labels = mat["x"], np.asarray(mat["label"]).ravel()
    if images.ndim != 3 or images.shape[2] != labels.size:
        raise DataError(f"{path}: expected x of shape H x W x N with N = len(label) = {labels.size}, got {images.shape}")
    return images, labels


def import_umist(src: Path, out: Path, source: SourceParams, seed: int) -> tuple[pd.DataFrame, SetQuality]:
    quality = SetQuality("umist")
    if not (src / MAT_FILE).exists():
        raise DataError(f"umist: {src / MAT_FILE} not found")
    images, labels = load_mat(src / MAT_FILE)
    count = labels.size if not source.max_images else min(labels.size, source.max_images)
    (out / "images").mkdir(parents=True, exist_ok=True)
    position: dict[int, int] = {}
    records = []
    for index in range(count):
        quality.read += 1
        subject = int(labels[index])
        image = images[:, :, index]
        if image.std() == 0:
            quality.skip(f"x[:, :, {index}]", "blank_image")
            continue
        order = position.get(subject, 0)
        position[subject] = order + 1
        name = f"s{subject:02d}_{order:02d}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(out / "images" / name)
        quality.kept += 1
        records.append({"path": f"images/{name}", "identity": f"s{subject:02d}", "subject": subject,
                        "sequence_index": order, "mat_index": index})
    frame = pd.DataFrame.from_records(records)
    frame["sequence_length"] = frame.groupby("identity")["sequence_index"].transform("count")
    return frame, quality
