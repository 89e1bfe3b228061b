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


def thin_plate_flow(source: torch.Tensor, target: torch.Tensor, size: int, smoothing: float = 1e-4) -> torch.Tensor:
    """Dense flow f over a size x size grid with f(source_k) = target_k - source_k, interpolated by a thin-plate
    spline (Bookstein 1989: the smoothest interpolant, U(r) = r^2 log r plus an affine part); `smoothing` on
    the kernel's diagonal (and, negated, on the affine block's) keeps nearly coincident points (closed lips)
    and degenerate sets (all points at one place) solvable. (N, K, 2) normalised points
    -> (N, 2, size, size), so that warp(b, f) moves b's points `target` onto `source`. Gradients reach the
    displacements target - source, not the kernel's geometry (its solve is ill-conditioned for near points)."""
    n, k, _ = source.shape
    displacement = (target - source).float()
    source = source.detach().float()

    def kernel(squared):
        return 0.5 * squared * torch.log(squared.clamp_min(1e-12))    # r^2 log r

    eye = torch.eye(k, device=source.device)
    affine = torch.cat([torch.ones(n, k, 1, device=source.device), source], -1)        # N, K, 3
    system = torch.cat([torch.cat([kernel((source[:, :, None] - source[:, None]).pow(2).sum(-1)) + smoothing * eye,
                                   affine], 2),
                        torch.cat([affine.transpose(1, 2), -smoothing * torch.eye(3, device=source.device).expand(n, 3, 3)], 2)], 1)
    rhs = torch.cat([displacement, torch.zeros(n, 3, 2, device=source.device)], 1)
    coefficients = torch.linalg.solve(system, rhs)                                      # N, K + 3, 2
    grid = identity_grid(n, size, source.device).reshape(n, size * size, 2)
    radial = kernel((grid[:, :, None] - source[:, None]).pow(2).sum(-1))                # N, S*S, K
    flow = radial @ coefficients[:, :k] + torch.cat([torch.ones_like(grid[..., :1]), grid], -1) @ coefficients[:, k:]
    return flow.view(n, size, size, 2).permute(0, 3, 1, 2)
