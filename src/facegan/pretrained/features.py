"""One FaceNet feature cache (stage `features`): the 1792-d pool and the 512-d unit embedding of every
stored image (and, for the sets in `features.mirrored`, of its mirror image), computed once and read
by every consumer.

Before it, FaceNet ran over the same images in `beauty`, `pseudo_label`, `identity_gallery`,
`train@dtn` (f(s), f(t)), every `train@tpgan` step (f of the true frontal: 144 distinct images)
and the evaluations. The mirrored rows serve training with random horizontal flips: a flipped
image gets the features of the flipped image (DTN's f(s) and f(t), TP-GAN's f(frontal)).

data/features/<set>.npz holds `path` (the set's manifest names, in manifest order), `pool`,
`embedding` and, for mirrored sets, `pool_mirrored`, `embedding_mirrored` (float32). Multi-PIE's frontals (camera 051)
are cached at each size TP-GAN may train at (`multipie_frontal_<size>.npz`, with their mirror images for
TP-GAN's `mirror_augment`), resized exactly as TP-GAN's pairs are (data/multipie.py `load_pairs`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

KINDS = ("pool", "embedding")


def feature_path(root: Path, name: str) -> Path:
    return Path(root) / "data" / "features" / f"{name}.npz"


def multipie_frontal_name(size: int) -> str:
    return f"multipie_frontal_{size}"


@torch.inference_mode()
def facenet_features(facenet, images: np.ndarray | torch.Tensor, precision: str = "bf16", batch_size: int = 64,
                     device: str = "cpu") -> dict[str, np.ndarray]:
    """FaceNet's pool and embedding of (N, H, W, 3) uint8 images or (N, 3, H, W) [-1, 1] tensors,
    batch by batch ((N, 1792) and (N, 512) float32). bf16 where asked and the hardware has it."""
    from facegan.data.datasets import to_tensor
    from facegan.devices import bf16_autocast

    parts = {kind: [] for kind in KINDS}
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        chunk = to_tensor(chunk) if isinstance(chunk, np.ndarray) else chunk
        chunk = chunk.to(device).contiguous(memory_format=torch.channels_last)
        with bf16_autocast(device, precision == "bf16"):
            out = facenet.features(chunk)
        out["embedding"] = F.normalize(out["embedding"].float(), dim=1)   # unit in fp32 (bf16 leaves it 0.3 % off)
        for kind in KINDS:
            parts[kind].append(out[kind].float().cpu().numpy())
    return {kind: np.concatenate(parts[kind]) if parts[kind] else np.zeros((0, 1792 if kind == "pool" else 512),
                                                                             np.float32) for kind in KINDS}


def load_features(root: Path, name: str, paths=None, kinds=("embedding",), mirrored: bool = False
                  ) -> dict[str, np.ndarray]:
    """Cached features of set `name`: {kind: (N, D)} in the order of `paths` (default: the whole set in
    manifest order); with `mirrored`, also {kind_mirrored: ...}. Names the set or image that is missing."""
    path = feature_path(root, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: add {name!r} to features.sets (params.yaml) and run "
                                f"`dvc repro features`")
    keys = list(kinds) + ([f"{k}_mirrored" for k in kinds] if mirrored else [])
    with np.load(path, allow_pickle=False) as f:
        if mirrored and f"{kinds[0]}_mirrored" not in f.files:
            raise KeyError(f"{path} holds no mirror-image features: add {name!r} to features.mirrored "
                           "(params.yaml) and run `dvc repro features`")
        stored = f["path"].astype(str)
        arrays = {key: f[key] for key in keys}
    if paths is None:
        return arrays
    from facegan.data.datasets import rows_of
    import pandas as pd

    try:
        rows = rows_of(pd.DataFrame({"path": stored}), [str(p) for p in paths])
    except KeyError as err:
        raise KeyError(f"{path}: {err.args[0]}; run `dvc repro features`") from None
    return {key: value[rows] for key, value in arrays.items()}
