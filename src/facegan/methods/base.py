"""The one interface every method follows (after pix2pix/CycleGAN's BaseModel).

A method is an nn.Module holding its networks. The training loop gives it a
batch and the step's random generator and gets back a dict of losses; for
evaluation and the CLI it turns conditions or photos into images. All
randomness of a step comes from `generator`, seeded by (seed, step, rank), so
a run resumed from a checkpoint repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn


class Method(nn.Module, ABC):
    name: str = ""
    flip_augment: bool = True   # random horizontal flips of the training images (off where labels hold positions)

    def __init__(self, params, common):
        super().__init__()
        self.params = params
        self.common = common

    @abstractmethod
    def trainable(self) -> dict[str, nn.Module]:
        """Networks the loop may wrap in DistributedDataParallel (by attribute name)."""

    @abstractmethod
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        ...

    @abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor], step: int, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step; returns the losses (floats) to log."""

    @abstractmethod
    def sample_grid(self, generator: torch.Generator) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1]: the progress grid, the same inputs at every call."""

    def after_step(self, step: int) -> None:
        """Hook for EMA updates and schedules."""

    def setup(self, root: Path, device) -> None:
        """Attach the fixed pretrained networks the method uses but never trains or saves
        (FaceNet as DTN's f), read from the project at `root`."""

    def attach_fixed(self, attribute: str, net: nn.Module) -> None:
        """A fixed pretrained network (FaceNet): frozen, in eval mode, kept outside the module
        tree, so it is never trained, never moved by .to() and never saved with the method."""
        net = net.eval().requires_grad_(False)
        if self.common.channels_last:
            net = net.to(memory_format=torch.channels_last)
        object.__setattr__(self, attribute, net)

    def prepare(self, labels: torch.Tensor | None) -> None:
        """Called once with the whole training label set before training starts (or
        resumes): for statistics of the conditions that must travel with the weights."""


class GANMethod(Method):
    """A generator G and a discriminator D, each with Adam(lr, (beta1, beta2)), one D
    step per G step, and an EMA of G's weights (`G_ema`) for sampling."""

    def __init__(self, params, common, G: nn.Module, D: nn.Module):
        super().__init__(params, common)
        self.G, self.D = G, D
        self.ema = EMA(self.G, params.ema_decay)
        self.G_ema = self.ema.shadow  # registered, so it is saved with the method

    def trainable(self):
        return {"G": self.G, "D": self.D}

    def configure_optimizers(self):
        p = self.params
        return {"G": torch.optim.Adam(unwrap(self.G).parameters(), p.lr_g, betas=(p.beta1, p.beta2)),
                "D": torch.optim.Adam(unwrap(self.D).parameters(), p.lr_d, betas=(p.beta1, p.beta2))}

    def after_step(self, step):
        self.ema.update(unwrap(self.G), step)


class EMA:
    """Exponential moving average of a network's weights (buffers copied), for sampling."""

    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """decay_t = min(decay, (1 + t) / (10 + t)): early on the average follows the
        network instead of remembering its random initialisation."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for target, source in zip(self.shadow.parameters(), net.parameters()):
            target.lerp_(source.detach().float().to(target.dtype), 1 - decay)
        for target, source in zip(self.shadow.buffers(), net.buffers()):
            target.copy_(source)


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return getattr(net, "module", net)
