"""Pixel fidelity, one definition for every method: PSNR and L1 on the [0, 1] scale."""
from __future__ import annotations

import numpy as np
import torch


def psnr(outputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Per-image PSNR (dB, peak 1) of (N, 3, H, W) images in [-1, 1], on the [0, 1] scale."""
    mse = ((outputs.float() - targets.float()) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (-10 * torch.log10(mse)).cpu().numpy()


def l1(outputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Per-image mean |difference| on the [0, 1] scale."""
    return ((outputs.float() - targets.float()).abs() / 2).flatten(1).mean(1).cpu().numpy()
