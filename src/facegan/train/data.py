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
    """One image set (and its per-image labels) served as seeded batches."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, flip: bool = True, paired: dict[str, np.ndarray] | None = None,
                 values: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, channels_last: bool = True,
                 fixed: dict[str, np.ndarray] | None = None):
        if len(images) < batch_size * world_size:
            raise ValueError(f"{len(images)} training images, fewer than one global batch "
                             f"({batch_size} x {world_size} processes)")
        self.images = torch.from_numpy(images)                       # N, H, W, 3 uint8
        self.fixed = dict(fixed or {})   # arrays of the set as a whole, never batched (TrainingData.fixed)
        # images indexed like `images` (TP-GAN's frontal targets): batched with them, under the same flips
        self.paired = {name: torch.from_numpy(array) for name, array in (paired or {}).items()}
        for name, array in self.paired.items():
            if array.shape != self.images.shape:
                raise ValueError(f"paired set {name!r} has shape {tuple(array.shape)}, the images "
                                 f"{tuple(self.images.shape)}")
        # per-image arrays and their mirror images' (features of a fixed network): a flip takes the second
        self.values = {name: tuple(None if a is None else torch.from_numpy(np.asarray(a, np.float32)) for a in pair)
                       for name, pair in (values or {}).items()}
        for name, (ahead, mirrored) in self.values.items():
            if len(ahead) != len(self.images) or (mirrored is not None and ahead.shape != mirrored.shape):
                raise ValueError(f"values {name!r}: shape {tuple(ahead.shape)} (mirror rows: "
                                 f"{None if mirrored is None else tuple(mirrored.shape)}) for {len(self.images)} images")
            if flip and mirrored is None:
                raise ValueError(f"values {name!r} have no mirror-image rows, so flipped images would get the "
                                 "unflipped image's values: give them, or train without flips")
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels, np.float32))
        self.batch_size, self.seed, self.rank, self.world_size, self.flip = batch_size, seed, rank, world_size, flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
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
        out.update({name: to_tensor(array[idx].numpy()).to(device) for name, array in self.paired.items()})
        out.update({name: ahead[idx].to(device) for name, (ahead, _) in self.values.items()})
        if self.labels is not None:
            out["attributes"] = self.labels[idx].to(device)
        return out

    def all_values(self) -> dict[str, torch.Tensor]:
        """Every image's values (unflipped), the whole set on every process: for statistics fitted once."""
        return {name: ahead for name, (ahead, _) in self.values.items()}

    def batch(self, step: int, device) -> dict[str, torch.Tensor]:
        idx = self.indices(step)
        sets = {"image": self.images, **self.paired}
        out = {}
        flips = torch.rand(len(idx), generator=torch.Generator().manual_seed(self.seed * 7919 + step)) < 0.5
        for name, array in sets.items():
            x = to_tensor(array[idx].numpy())
            if self.flip:
                x = torch.where(flips[:, None, None, None], x.flip(3), x)
            out[name] = x.to(device).contiguous(memory_format=self.memory_format)
        for name, (ahead, mirrored) in self.values.items():
            out[name] = (torch.where(flips[:, None], mirrored[idx], ahead[idx]) if self.flip else ahead[idx]).to(device)
        out["index"] = idx
        if self.labels is not None:
            out["attributes"] = self.labels[idx].to(device)
        return out


class JointBatches:
    """A method's main set plus auxiliary sets (a second domain, references), each
    batched independently with its own seed; an auxiliary set's keys come prefixed
    with its name ("target_image", "target_attributes", "target_index")."""

    def __init__(self, main: InMemoryBatches, aux: dict[str, InMemoryBatches]):
        self.main, self.aux = main, aux
        self.images, self.labels = main.images, main.labels

    def _merge(self, get) -> dict[str, torch.Tensor]:
        out = get(self.main)
        for name, batches in self.aux.items():
            out.update({f"{name}_{key}": value for key, value in get(batches).items()})
        return out

    def batch(self, step: int, device) -> dict[str, torch.Tensor]:
        return self._merge(lambda b: b.batch(step, device))

    def examples(self, n: int, device) -> dict[str, torch.Tensor]:
        return self._merge(lambda b: b.examples(n, device))


def make_batches(data, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, flip: bool = True,
                 channels_last: bool = True):
    """Batches for a method's TrainingData: its main set (with `paired` sets batched image by image
    with it) and each auxiliary set batched independently. `flip`: random horizontal flips (off
    where labels hold positions); `channels_last`: the images' memory format (train.common)."""
    main = InMemoryBatches(data.images, data.labels, batch_size, seed, rank, world_size, flip, data.paired,
                           data.values, channels_last, data.fixed)
    if not data.aux:
        return main
    aux = {name: InMemoryBatches(a.images, a.labels, batch_size, seed + 1 + k, rank, world_size, flip, a.paired,
                                 a.values, channels_last, a.fixed)
           for k, (name, a) in enumerate(sorted(data.aux.items()))}
    return JointBatches(main, aux)
