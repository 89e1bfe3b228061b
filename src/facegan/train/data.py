"""Training batches as a pure function of (seed, step, rank): resuming needs no loader state.

Each epoch is a seeded permutation of the training images; under DDP every
rank takes its own interleaved share of each global batch, so ranks see
different images and together the same ones one process would.
"""
from __future__ import annotations

import numpy as np
import torch

from facegan.data.datasets import to_tensor


class InMemoryBatches:
    def __init__(self, images: np.ndarray, labels: np.ndarray | None, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, flip: bool = True):
        if len(images) < batch_size * world_size:
            raise ValueError(f"{len(images)} training images, fewer than one global batch "
                             f"({batch_size} x {world_size} processes)")
        self.images = torch.from_numpy(images)                       # N, H, W, 3 uint8
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels, np.float32))
        self.batch_size, self.seed, self.rank, self.world_size, self.flip = batch_size, seed, rank, world_size, flip
        self.global_batch = batch_size * world_size
        self.per_epoch = len(images) // self.global_batch

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.per_epoch)
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        window = order[position * self.global_batch:(position + 1) * self.global_batch]
        return window[self.rank::self.world_size]

    def examples(self, n: int, device) -> dict[str, torch.Tensor]:
        """The same n training images (no flip) at every call: the inputs of progress grids."""
        idx = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.seed))[:n]
        out = {"image": to_tensor(self.images[idx].numpy()).to(device), "index": idx}
        if self.labels is not None:
            out["attributes"] = self.labels[idx].to(device)
        return out

    def batch(self, step: int, device) -> dict[str, torch.Tensor]:
        idx = self.indices(step)
        x = to_tensor(self.images[idx].numpy())
        if self.flip:
            flips = torch.rand(len(idx), generator=torch.Generator().manual_seed(self.seed * 7919 + step)) < 0.5
            x = torch.where(flips[:, None, None, None], x.flip(3), x)
        out = {"image": x.to(device).contiguous(memory_format=torch.channels_last), "index": idx}
        if self.labels is not None:
            out["attributes"] = self.labels[idx].to(device)
        return out
