"""Blocks shared by the methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn_conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, padding))


def sn_linear(cin: int, cout: int, bias: bool = True) -> nn.Module:
    return spectral_norm(nn.Linear(cin, cout, bias=bias))


class MatmulConv2d(nn.Conv2d):
    """nn.Conv2d (groups 1, zero padding) computed as unfold + one matmul: the same function and parameters
    (a drop-in: state dicts are interchangeable). For a few-pixel map with many channels, e.g. Fader's
    512 x 4 x 4 -> 2 x 2 layers, oneDNN's convolution (its backward above all) runs far below the matmul rate:
    at batch 64 on 2 AMX cores, forward + backward of Conv2d(256, 512, 4, 2, 1) on a 4 x 4 map took ~26 ms in
    bf16, ~25x its FLOPs at the matmul rate (benchmarks/train_throughput.py measures the methods whole)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups != 1 or self.padding_mode != "zeros":
            raise ValueError("MatmulConv2d: groups 1 and zero padding only")
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        out_h, out_w = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        # one (N L, C k k) x (C k k, O) product, so the weight's gradient is one matmul too, not N small ones
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride).transpose(1, 2)
        out = F.linear(columns.reshape(n * out_h * out_w, -1), self.weight.flatten(1), self.bias)
        return out.view(n, out_h, out_w, -1).permute(0, 3, 1, 2)   # channels_last in memory


class MatmulConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d (groups 1) as one matmul and a fold (col2im, summed in fp32): the same function and
    parameters, for the few-pixel maps where oneDNN's transposed convolution is slow (MatmulConv2d)."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.groups != 1 or output_size is not None:
            raise ValueError("MatmulConvTranspose2d: groups 1 and no output_size only")
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        oh, ow = self.output_padding
        out_h, out_w = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1, (w - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1
        pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, -1)                              # N L, C
        columns = F.linear(pixels, self.weight.flatten(1).t()).view(n, h * w, -1).transpose(1, 2)   # N, O k k, L
        out = F.fold(columns.float(), (out_h, out_w), self.kernel_size, self.dilation, self.padding, self.stride)
        if self.bias is not None:
            out = out + self.bias[:, None, None].float()
        return out.to(columns.dtype)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are linear in a condition vector (de Vries et al. 2017)."""

    def __init__(self, channels: int, condition_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Linear(condition_dim, channels)
        self.beta = nn.Linear(condition_dim, channels)
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gamma(condition)[:, :, None, None] + self.beta(condition)[:, :, None, None]


class UpBlock(nn.Module):
    """Nearest x2 upsampling, conv 3x3, conditional BN, ReLU."""

    def __init__(self, cin: int, cout: int, condition_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm = ConditionalBatchNorm(cout, condition_dim)

    def forward(self, x, condition):
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")), condition))


class DownBlock(nn.Module):
    """Spectrally normalised conv 3x3 then conv 4x4 stride 2, LeakyReLU 0.1 (SNGAN's D)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = sn_conv(cin, cout, 3, 1, 1)
        self.conv2 = sn_conv(cout, cout, 4, 2, 1)

    def forward(self, x):
        return F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.1)), 0.1)


def total_variation(images: torch.Tensor, eps: float = 1e-6, per_image_sum: bool = False) -> torch.Tensor:
    """Anisotropic TV with B = 1 (DTN's L_TV, TP-GAN's L_tv with beta = 1) of
    sqrt((x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2): its mean over pixels and channels, or with
    `per_image_sum` its sum over them (DTN's Eq. 7 sums), averaged over the batch."""
    dx = images[:, :, :-1, 1:] - images[:, :, :-1, :-1]
    dy = images[:, :, 1:, :-1] - images[:, :, :-1, :-1]
    tv = (dx.float().pow(2) + dy.float().pow(2) + eps).sqrt()
    return tv.sum((1, 2, 3)).mean() if per_image_sum else tv.mean()


def shift_and_blur(images: torch.Tensor, max_shift: int, max_sigma: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable nuisance: each image shifted by a random whole number of pixels in
    [-max_shift, max_shift] on each axis (edges replicated), then the batch blurred by a Gaussian of a random
    sigma in [0, max_sigma] (3 x 3). A loss read through a fixed network on this input cannot be won by
    pixel-exact high-frequency patterns."""
    n, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    shifted = torch.stack([padded[i, :, y:y + height, x:x + width] for i, (y, x) in enumerate(offsets.tolist())])
    sigma = float(torch.rand((), generator=generator)) * max_sigma
    if sigma < 1e-3:
        return shifted
    taps = torch.exp(-torch.arange(-1.0, 2.0).pow(2) / (2 * sigma ** 2))
    taps = (taps / taps.sum()).to(images.device, images.dtype)
    channels = images.shape[1]
    blurred = F.conv2d(F.pad(shifted, (1, 1, 0, 0), mode="replicate"), taps.view(1, 1, 1, 3).repeat(channels, 1, 1, 1),
                       groups=channels)
    return F.conv2d(F.pad(blurred, (0, 0, 1, 1), mode="replicate"), taps.view(1, 1, 3, 1).repeat(channels, 1, 1, 1),
                    groups=channels)


class InstanceNorm(nn.InstanceNorm2d):
    """InstanceNorm2d(affine=True) that returns its input's memory layout: InstanceNorm2d's output is NCHW
    whatever its input, and converting it back to channels_last before the next convolution took a third of
    GeoGAN's step. Not GroupNorm(c, c), the same function and parameters (state dicts interchangeable): in bf16
    channels_last its forward + backward took 2.5-5x InstanceNorm2d's (batch 16, 16-64 channels, 64-16 px;
    in fp32 the two tie) and was 61 % of GeoGAN's step. GeoGAN on 2 AMX cores (benchmarks/train_throughput.py,
    shipped setting): 18 img/s with GroupNorm, 30 with InstanceNorm2d, 42 with this."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return out.contiguous(memory_format=torch.channels_last)
        return out


NORMS = {"batch": nn.BatchNorm2d, "instance": InstanceNorm}


def strided_layers(width: int, blocks: int, norm_first: bool = True, norm: str = "batch"
                   ) -> tuple[list[nn.Module], int]:
    """Discriminator blocks conv 4x4 stride 2 (+ BatchNorm, or InstanceNorm with `norm="instance"`)
    + LeakyReLU 0.2, channels w, 2w, 4w, ... (DCGAN's D). Returns the layers and the last block's channels."""
    layers, cin = [], 3
    for i in range(blocks):
        cout = width * 2 ** i
        norm_layer = [NORMS[norm](cout)] if (i > 0 or norm_first) else []
        layers += [nn.Conv2d(cin, cout, 4, 2, 1), *norm_layer, nn.LeakyReLU(0.2)]
        cin = cout
    return layers, cin


def down_trunk(width: int, size: int) -> tuple[nn.Sequential, int]:
    """SNGAN discriminator body: DownBlocks from `size` to 4 x 4, channels doubling up to 8w.

    Returns the trunk and its output channels (sum-pool its output for the heads)."""
    blocks = int(round(torch.log2(torch.tensor(size / 4)).item()))
    channels = [3] + [width * 8 // 2 ** (blocks - 1 - i) for i in range(blocks)]
    return nn.Sequential(*[DownBlock(channels[i], channels[i + 1]) for i in range(blocks)]), channels[blocks]


def signed(labels: torch.Tensor) -> torch.Tensor:
    """Binary attributes (0 / 1, or in between) as the generators read them: -1 / +1."""
    return labels.float() * 2 - 1


class Generator(nn.Module):
    """DCGAN generator with conditional batch norm on [z, c] (cgan, beholder): 4 x 4 x 8w -> size, tanh."""

    def __init__(self, z_dim: int, n_attr: int, width: int, size: int = 64):
        super().__init__()
        self.z_dim = z_dim
        blocks = int(round(torch.log2(torch.tensor(size / 4)).item()))
        channels = [width * 8 // 2 ** i for i in range(blocks + 1)]   # halved at every doubling (DCGAN)
        self.start = channels[0]
        self.fc = nn.Linear(z_dim + n_attr, 4 * 4 * self.start)
        self.blocks = nn.ModuleList(UpBlock(channels[i], channels[i + 1], z_dim + n_attr) for i in range(blocks))
        self.out_norm = nn.BatchNorm2d(channels[blocks])
        self.out = nn.Conv2d(channels[blocks], 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.head(z, c))

    def head(self, z: torch.Tensor, c: torch.Tensor, blocks: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, [z, c]): the activation entering up-block `blocks` (0: fc's 4 x 4 map) and the condition."""
        condition = torch.cat([z, c], 1)
        x = self.fc(condition).view(len(z), self.start, 4, 4)
        for block in self.blocks[:blocks]:
            x = block(x, condition)
        return x, condition

    def decode(self, x: torch.Tensor, condition: torch.Tensor, first_block: int = 0) -> torch.Tensor:
        """The image from the activation x entering up-block `first_block` (len(blocks): the output layer)."""
        for block in self.blocks[first_block:]:
            x = block(x, condition)
        return torch.tanh(self.out(F.relu(self.out_norm(x))))


class EncoderDecoder(nn.Module):
    """A U-Net: `depth` stride-2 conv blocks (BatchNorm or `norm="instance"`, LeakyReLU 0.2) from w to
    w 2^depth channels, back up by nearest x2 + conv (same norm, ReLU) with the encoder's map of the same
    scale concatenated, then a 3 x 3 conv to `cout` channels (no activation)."""

    def __init__(self, cin: int, cout: int, width: int, depth: int, norm: str = "batch"):
        super().__init__()
        channels = [width * 2 ** i for i in range(depth + 1)]

        def block(i, o, stride=1, act=None):
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), NORMS[norm](o), act or nn.LeakyReLU(0.2))

        self.encoder = nn.ModuleList([block(cin, channels[0])] +
                                     [block(channels[i], channels[i + 1], 2) for i in range(depth)])
        self.decoder = nn.ModuleList(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   block(channels[i + 1] * (1 if i + 1 == depth else 2), channels[i],
                                                         act=nn.ReLU()))
                                     for i in reversed(range(depth)))
        self.out = nn.Conv2d(2 * channels[0], cout, 3, 1, 1)

    def forward(self, x):
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = torch.cat([block(x), skips.pop()], 1)
        return self.out(x)


def diff_augment(x: torch.Tensor, policies, generator: torch.Generator) -> torch.Tensor:
    """DiffAugment (Zhao, Liu, Lin, Zhu & Han, NeurIPS 2020): the same random, differentiable transforms on
    every image D sees, real or generated, in D's step and G's, so D cannot memorise a small training set
    and G's gradient passes through them. Each image draws its own: `color` brightness + U(-0.5, 0.5),
    saturation x U(0, 2), contrast x U(0.5, 1.5); `translation` by up to 1/8 of the side, zero-padded;
    `cutout` a zeroed square of half the side at a random centre (the authors' settings; x in [-1, 1])."""
    n, _, height, width = x.shape

    def uniform() -> torch.Tensor:
        return torch.rand(n, 1, 1, 1, generator=generator).to(x.device, x.dtype)

    if "color" in policies:
        x = x + (uniform() - 0.5)
        mean = x.mean(1, keepdim=True)
        x = (x - mean) * (uniform() * 2) + mean
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (uniform() + 0.5) + mean
    if "translation" in policies:
        shift_y, shift_x = int(height * 0.125 + 0.5), int(width * 0.125 + 0.5)
        dy = torch.randint(-shift_y, shift_y + 1, (n, 1), generator=generator)
        dx = torch.randint(-shift_x, shift_x + 1, (n, 1), generator=generator)
        rows = (torch.arange(height)[None] + dy + shift_y).to(x.device)    # into the padded image
        columns = (torch.arange(width)[None] + dx + shift_x).to(x.device)
        padded = F.pad(x, (shift_x, shift_x, shift_y, shift_y))
        x = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], columns[:, None, :]]
        x = x.permute(0, 3, 1, 2)
    if "cutout" in policies:
        cut_y, cut_x = int(height * 0.5 + 0.5), int(width * 0.5 + 0.5)
        cy = torch.randint(0, height + (1 - cut_y % 2), (n, 1, 1), generator=generator)
        cx = torch.randint(0, width + (1 - cut_x % 2), (n, 1, 1), generator=generator)
        ys = torch.arange(height)[None, :, None]
        xs = torch.arange(width)[None, None, :]
        inside = ((ys >= cy - cut_y // 2) & (ys < cy - cut_y // 2 + cut_y) &
                  (xs >= cx - cut_x // 2) & (xs < cx - cut_x // 2 + cut_x))
        x = x * (~inside).to(x.device, x.dtype)[:, None]
    return x
