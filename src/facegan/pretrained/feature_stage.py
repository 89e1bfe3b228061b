"""Stage `features`: fill the FaceNet feature cache (pretrained/features.py) for every stored set and
Multi-PIE's frontals at each size TP-GAN may train at (with their mirror images: TP-GAN's mirror_augment)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facegan.pretrained.features import facenet_features, feature_path, multipie_frontal_name


def cache_set(facenet, images: np.ndarray, paths, path: Path, params, device: str, mirrored: bool) -> dict:
    """Features of `images` (and, if `mirrored`, of their mirror images) -> `path`; returns the arrays."""
    images = np.asarray(images)
    arrays = {"path": np.asarray(paths).astype(str),
              **facenet_features(facenet, images, params.precision, params.batch_size, device)}
    if mirrored:
        flipped = facenet_features(facenet, np.ascontiguousarray(images[:, :, ::-1]), params.precision,
                                   params.batch_size, device)
        arrays.update({f"{k}_mirrored": v for k, v in flipped.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def run_features(params, root: Path, device: str) -> dict:
    """Stage `features`: every image of `params.sets` and Multi-PIE's frontals at `params.multipie_sizes`."""
    from facegan.data.datasets import load_images, set_folder
    from facegan.data.multipie import frontal_rows
    from facegan.pretrained.facenet import load_converted

    facenet = load_converted(Path(root), device)
    from facegan.devices import precision_used

    report = {"precision": precision_used(device, params.precision)}
    for name in params.sets:
        images, frame = load_images(set_folder(root, name))
        cache_set(facenet, images, frame["path"], feature_path(root, name), params, device, name in params.mirrored)
        report[name] = {"images": len(frame)}
    for size in params.multipie_sizes:
        images, paths = frontal_rows(root, size)
        name = multipie_frontal_name(size)
        cache_set(facenet, images, paths, feature_path(root, name), params, device, True)   # for mirror_augment
        report[name] = {"images": len(paths)}
    return report
