"""Device choice shared by every stage."""
from __future__ import annotations


def resolve_device(device: str) -> str:
    """'auto' -> CUDA when present, else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def inference_autocast(device):
    """bf16 autocast where the hardware has it, as training computes: for fixed networks run
    outside the loop (FaceNet features of real images, evaluation)."""
    import torch

    device = str(device)
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16_supported(device))
