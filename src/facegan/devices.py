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


def bf16_autocast(device, wanted: bool = True):
    """bf16 autocast when `wanted` AND the hardware has bf16 (AVX512-bf16/AMX CPUs, bf16 GPUs); fp32
    otherwise. Every bf16 use goes through here: without the instructions (an AVX2-only CPU) PyTorch
    falls back to a bf16 path that runs a matmul ~60x slower than fp32."""
    import torch

    device = str(device)
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=wanted and bf16_supported(device))


def precision_used(device, wanted: str) -> str:
    """The precision a `wanted` ('bf16' | 'fp32') setting runs at on this hardware (for the records)."""
    return "bf16" if wanted == "bf16" and bf16_supported(str(device)) else "fp32"


def inference_autocast(device):
    """bf16 autocast where the hardware has it, as training computes: for fixed networks run
    outside the loop (FaceNet features of generated images, evaluation)."""
    return bf16_autocast(device)
