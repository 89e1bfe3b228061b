"""Dense flow on face crops: a differentiable bilinear sampler (Spatial Transformer Networks, Jaderberg
et al. 2015) in grid_sample's normalised coordinates; GeoGAN warps with it and its evaluation measures it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def to_grid_coordinates(points: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates (x, y) -> grid_sample's normalised ones (align_corners=False)."""
    return (2 * points + 1) / size - 1


def identity_grid(n: int, size: int, device, dtype=torch.float32) -> torch.Tensor:
    """(N, size, size, 2) grid that samples every pixel at its own centre."""
    axis = (2 * torch.arange(size, device=device, dtype=dtype) + 1) / size - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y], -1).expand(n, size, size, 2)


def warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """warp(b)(p) = b(p + flow(p)), bilinear; flow (N, 2, H, W) in normalised units."""
    grid = identity_grid(len(images), images.shape[-1], images.device, flow.dtype) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(images.to(flow.dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)


def flow_at(flow: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The flow sampled at (N, K, 2) normalised points -> (N, K, 2)."""
    sampled = F.grid_sample(flow.float(), points[:, :, None, :].float(), mode="bilinear", padding_mode="border",
                            align_corners=False)
    return sampled[:, :, :, 0].permute(0, 2, 1)
