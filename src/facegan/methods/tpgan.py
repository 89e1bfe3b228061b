"""TP-GAN (Huang, Zhang, Li & He, ICCV 2017, arXiv 1704.04086): profile -> frontal face.

Data: Multi-PIE pairs (stage `multipie`): every training image, at any of the
13 yaws, -> the frontal image (camera 051) of the same person and flash. The
labels of an input are its four patch centres (left eye, right eye, nose tip,
mouth; from dlib up to `multipie.trusted_yaw`, from the yaw model beyond, see
faces/pose.py) and its yaw.

Generator G = two pathways and a fusion:
- global pathway: an encoder-decoder with skip connections at every scale.
  Encoder convs 7x7 (S), 5x5 /2, 3x3 /2 (three times) to S/16, a fully
  connected layer to 512 with maxout to 256; z (noise) is appended, a fully
  connected layer back to an S/16 map, and the decoder climbs back to S with
  the encoder's maps concatenated at each scale. It also draws the face at S/4
  and S/2, which feed the next scale (the paper's multi-scale outputs).
- four local pathways (own weights each): encoder-decoders on the patches
  cropped around the input's landmarks, eyes 40 x 40, nose 32 x 40, mouth
  32 x 48 at S = 128 (scaled with S), each giving a patch image and a feature
  map.
- fusion: each local feature map is placed on an S x S canvas at the patch's
  position in the FRONTAL TEMPLATE (the training people's mean frontal
  landmarks), the four are fused by max, concatenated with the global
  features and the S/2 image, and two convolutions draw the output.

Losses (G):  L_syn = L_pixel + l1 L_sym + l2 L_adv + l3 L_ip + l4 L_tv (+ l_id L_id),
with the paper's weights l1 = 0.3, l2 = 1e-3, l3 = 3e-3, l4 = 1e-4:
- L_pixel: mean L1 to the true frontal at S, S/2 and S/4 (the multi-scale
  outputs), plus the L1 of each local pathway's patch to the true frontal's
  patch at the template position;
- L_sym = 1/(W/2 H) sum_{x <= W/2} |I(x, y) - I(W - x + 1, y)| of the output;
- L_adv = -log D(G(I_P)), D a convolutional discriminator on S x S (real:
  true frontals);
- L_ip = sum_{i=1,2} d(F_i(G(I_P)), F_i(I_F)) over the last two feature
  layers of the converted FaceNet (1792-d pooled features and the 512-d
  embedding), standing in for the paper's Light-CNN; d = 1 - cos (`ip_loss:
  cosine`, ours) or the paper's mean |.| (`l1`): on FaceNet's scale the
  paper's L1 at its weight was ~7e-4 against L_pixel ~0.4, i.e. off. Weight
  0.1 (3-minute runs, issue 23: at 1 G drew FaceNet's adversarial colours,
  PSNR 16.8, frontalised rank-1 at 90 degrees 0.04; at 0.003 the term is off);
- L_id (`lambda_id`; the authors' code, not the paper's equations): the
  cross-entropy of the training person's index from the global pathway's
  256-d code through a linear head (`id_classes` outputs), so the code holds
  who the person is, not only the pose-free mean face;
- L_tv = mean sqrt(dx^2 + dy^2) of the output (the paper's TV with beta = 1).
D: -log D(I_F) - log(1 - D(G(I_P))), one D step per G step, Adam(lr, (0.5, 0.999)),
lr = 5e-4: the paper gives none; at a public re-implementation's 1e-4 a
4-minute CPU run identified fewer frontalised test faces (issue-8 note).

The global pathway reads the input concatenated with its mirror image
(`mirror_input`, the authors' code: the hidden half of a profile is best
guessed from the visible one).

The frontal prior (ours, `frontal_prior`, on by default; the paper: none). G
also reads the input warped onto the frontal template (frontal_prior: a
thin-plate spline through the 68 landmarks; from |yaw| = `prior_mirror_at` on
through the visible side's and the midline's only, the hidden half taken from
the visible half's mirror image: the soft symmetry of Hassner et al. 2015, with
a spline for their 3D model), and its output is m prior + (1 - m) drawn, m a
per-pixel weight from the fusion's features (starting at 0.98). The 68
landmarks are the yaw model's shape at the input's yaw, put on its four patch
centres by a similarity, at training and at use alike (no detector gives 68
points of a profile). Why: with 24 training people, a G that draws every pixel
learns to redraw their faces (below); the warp hands it the unseen person's own
pixels. The prior alone, no network at all, identifies the test people among
the 30 at |yaw| 0 / 30 / 45 / 60 / 75 / 90 at 1.00 / 0.96 / 0.92 / 0.82 / 0.61 / 0.35
(FaceNet, with distractors; with the test images' own landmarks). With the yaw model's landmarks,
as at use, under the full evaluation: 1.00 / 0.99 / 0.99 / 0.88 / 0.75 / 0.50 / 0.25 at |yaw| 0 / 15 /
30 / 45 / 60 / 75 / 90, dlib 0.07 / 0.01 at 75 / 90, collapse min 0.71; the default G in a fresh run
gave 1.00 / 1.00 / 0.96 / 0.83 / 0.71 / 0.46 / 0.26 and dlib 0.21 / 0.08. So G turns the warp into a
face dlib's frontal detector accepts, and at 90 degrees FaceNet's figure is the one-sided warp's: a
better prior there, not a longer run, is what would lift it.
`lambda_prior` (ours, 0 by default) weights the drawn share of the output,
mean(1 - m), so that G draws only where that gains more than the weight.

With the prior (3-minute runs, ~320 steps; rank-1 with distractors, frontalised,
FaceNet at |yaw| 0 / 30 / 45 / 60 / 75 / 90; dlib at 75 / 90, raw 0.10 / 0.01;
collapse min):
- m starting at 0.88: 1.00 / 0.96 / 0.81 / 0.58 / 0.42 / 0.26; 0.15 / 0.04; 0.72;
- **at 0.98 (the default)**, seeds 0 and 1: 1.00 / 0.94 / 0.78 / 0.71 / 0.49 / 0.29
  and 1.00 / 0.97 / 0.89 / 0.69 / 0.62 / 0.35; 0.17 / 0.07 and 0.14 / 0.06; 0.71, 0.71;
- lambda_ip 0.3: ... / 0.46 / 0.18; 0.19 / 0.11; mirror_augment: ... / 0.53 / 0.31;
  0.15 / 0.12; lambda_prior 0.1: ... / 0.50 / 0.26; 0.19 / 0.15; lambda_prior
  0.3: 1.00 / 1.00 / 0.92 / 0.78 / 0.61 / 0.32; 0.12 / 0.06 (PSNR 16.9: the
  output is the prior with its seams and grey wedges; G hardly draws).
Later runs (issue 23; FaceNet with distractors at 60 / 75 / 90, then the face-region protocol at 90):
the default, seeds 0 and 1: 0.64 / 0.51 / 0.24, 0.26 and 0.75 / 0.57 / 0.36, 0.26; 6 minutes (660
steps): 0.47 / 0.40 / 0.29, 0.26; lambda_id 0, seeds 0 and 1: 0.67 / 0.60 / 0.36, 0.26 and 0.72 / 0.58
/ 0.33, 0.21 (no better than the default's seed 1); lambda_ip 0.03: 0.65 / 0.43 / 0.24, 0.26; both:
0.75 / 0.57 / 0.18, 0.11. At 90 degrees the seed moves rank-1 by 0.1 (72 probes), more than any
recipe, and a longer run does not lift it: 0.3 holds on some seeds only. At 4x the budget (12 minutes,
1,419 steps) it falls: 0.25 at 75 and 0.10 at 90 degrees. By then D has won (its loss ~0.002) and G
draws blurred generic faces over the prior; the default's 3 minutes stop before that.
`ema_decay` (ours, 0 by default): frontalise with a moving average of G's weights (decay
min(ema_decay, (1 + t) / (10 + t)), as cGAN's). 3-minute runs on 2 AVX2 cores (100 steps), seeds 0 and 1,
FaceNet with distractors at 60 / 75 / 90, dlib at 75 / 90, collapse min: the trained G 0.78 / 0.58 / 0.28
and 0.79 / 0.64 / 0.31, dlib 0.11 / 0.11 and 0.17 / 0.12, collapse 0.66 and 0.68; the average at 0.99
0.81 / 0.60 / 0.32 and 0.81 / 0.69 / 0.31, dlib 0.11 / 0.11 and 0.11 / 0.15, collapse 0.70 and 0.67. That
is 1-3 probes of 72 at each yaw, inside the seed's spread, so the default keeps the trained G.
`prior_shading` n (ours, 0 by default): G relights the prior before the blend, prior (1 + gain) + offset with
gain and offset per colour on an n x n grid read from the code (a profile's visible side is lit and exposed
unlike the frontal camera's view, and the warp keeps its colours). 3-minute runs on 2 AVX2 cores (~140 steps),
seed 0, same figures as above: n = 4 0.57 / 0.29 / 0.24, dlib 0.10 / 0.08, PSNR 18.2 (the grid paints a mean
face's tones over the prior: blurred, bands of background colour); n = 1 0.75 / 0.43 / 0.28, dlib 0.14 / 0.10,
PSNR 18.1; without it 0.78 / 0.58 / 0.28, 0.11 / 0.11, PSNR 17.7. Relighting buys L1, not identity.
The outputs are frontal faces of the person, blurred where G draws over the
warp (most at 15-45 degrees); at 90 degrees the one-sided warp's seams show.
Before the prior, G redrew its training people (the runs below).

Departures: 64 x 64 by default (`size`; the paper's 128 selectable): four
times the steps in a CPU budget; FaceNet for Light-CNN; the symmetry loss on pixels only (the paper
also uses it in Laplacian space); plain conv blocks instead of the paper's
residual blocks, and channel widths scaled down (`width`, `local_width`) for
a CPU; D's architecture, not given in the paper, is ours; local pathways go
down 3 times at S = 128, 2 times at S = 64.

Without the prior, what a 3-minute CPU run reaches (issue 23; ~370 steps at 64 px; FaceNet
rank-1 of frontalised test faces at |yaw| 0 / 45 / 90, among the 6 test
people / among the 30 with the training people's frontal photos as
distractors): the default 0.83 / 0.68 / 0.54 and 0.57 / 0.33 / 0.06;
lambda_id 0: 0.90 / 0.68 / 0.53 and 0.60 / 0.32 / 0.06; lambda_ip 0 (3x the
steps, no FaceNet pass): 0.50 / 0.38 / 0.26 and 0.40 / 0.15 / 0.10. The
outputs carry who the person is among the unseen people, but at large yaw
they sit nearer a TRAINING person's frontal (the pairs' targets) than their
own: with 24 people to learn from, G draws the training faces it knows.
`mirror_augment` (ours, off by default: half of each batch's pairs mirrored,
so G sees 48 faces) did not beat the seed-to-seed spread. Rank-1 with
distractors at 0 / 60 / 75 / 90, seeds 0 and 1: without it 0.57, 0.53 /
0.15, 0.12 / 0.07, 0.08 / 0.06, 0.14; with it 0.43, 0.50 / 0.25, 0.14 /
0.15, 0.08 / 0.12, 0.06. dlib frontalised beats raw at 90 degrees in some
runs (0.07-0.14 against 0.01), never at 75 (0.06-0.07 against 0.10).
Collapse at worst 0.64-0.68 on pixels, 0.57-0.62 on dlib descriptors; the
face-region protocol gives the same picture (0.04 at 90 degrees with
distractors, the raw face region 0.60).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegan.faces.flow import thin_plate_flow, to_grid_coordinates, warp
from facegan.faces.pose import PATCHES, fit_yaw_model, patch_box, patch_centres, predict_landmarks
from facegan.methods.base import (EMA, Framed, Metric, RequestError, TrainingData, TransformMethod, Transformed,
                                  adam, random_images, random_unit, unwrap)
from facegan.methods.nets import strided_layers, total_variation

# (height, width) of each local pathway's patch at 128 x 128 (the paper's sizes)
PATCH_SIZES_128 = {"left_eye": (40, 40), "right_eye": (40, 40), "nose": (32, 40), "mouth": (32, 48)}
LABEL_COLUMNS = 9   # x, y of the four patch centres, then the yaw


def patch_sizes(size: int) -> dict[str, tuple[int, int]]:
    return {name: (h * size // 128, w * size // 128) for name, (h, w) in PATCH_SIZES_128.items()}


def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, act: str = "lrelu") -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.BatchNorm2d(cout)]
    layers.append(nn.LeakyReLU(0.2) if act == "lrelu" else nn.ReLU())
    return nn.Sequential(*layers)


def up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(cin, cout, 3, 1, "relu"))


# the 68 iBUG landmarks by side of the face as the image shows it frontally, and on its midline
IMAGE_LEFT = [*range(0, 8), *range(17, 22), *range(36, 42), 31, 32, 48, 49, 50, 58, 59, 60, 61, 67]
IMAGE_RIGHT = [*range(9, 17), *range(22, 27), *range(42, 48), 34, 35, 52, 53, 54, 55, 56, 63, 64, 65]
MIDLINE = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def frontal_prior(x: torch.Tensor, landmarks: torch.Tensor, template: torch.Tensor, yaws: torch.Tensor,
                  mirror_at: float) -> torch.Tensor:
    """The input warped onto the frontal template, its hidden half the mirror image of its visible half
    (ours; the soft symmetry of Hassner et al. 2015, "Effective face frontalization in unconstrained
    images", with a thin-plate spline through the 68 landmarks for their 3D model). Below |yaw| = mirror_at
    the spline runs through all 68 points and the warp is the prior. From mirror_at on, it runs through
    the visible side's points and the midline's (the hidden side's are squeezed onto the silhouette and
    would fold the warp), and the hidden half of the template takes the warped image mirrored across the
    template's midline. Negative yaws (nose to the image's left) show the image-right half. x (N, 3, S, S);
    landmarks (N, 68, 2) in x's pixels; template (68, 2) in pixels; yaws (N,) degrees -> (N, 3, S, S)."""
    n, side = len(x), x.shape[-1]
    landmarks, template = landmarks.float(), template.float()
    out = torch.empty_like(x, dtype=torch.float32)
    turned = yaws.abs() >= mirror_at
    cases = {"frontal": ~turned, "right": turned & (yaws < 0), "left": turned & (yaws > 0)}
    points = {"frontal": list(range(68)), "right": IMAGE_RIGHT + MIDLINE, "left": IMAGE_LEFT + MIDLINE}
    middle = float(template[MIDLINE, 0].mean())
    columns = torch.arange(side, device=x.device, dtype=torch.float32)
    for case, rows in cases.items():
        if not rows.any():
            continue
        k, m = points[case], int(rows.sum())
        flow = thin_plate_flow(to_grid_coordinates(template[k].expand(m, -1, -1), side),
                               to_grid_coordinates(landmarks[rows][:, k], side), side, smoothing=1e-3)
        warped = warp(x[rows].float(), flow)
        if case != "frontal":   # the hidden half: the warped image mirrored across the midline x = middle
            mirrored = F.grid_sample(warped, to_grid_coordinates(
                torch.stack(torch.meshgrid(columns, 2 * middle - columns, indexing="ij")[::-1], -1), side)
                .expand(m, -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=False)
            hidden = (columns < middle) if case == "right" else (columns >= middle)
            warped = torch.where(hidden.view(1, 1, 1, side), mirrored, warped)
        out[rows] = warped
    return out.to(x.dtype)


def shape_on_centres(shape: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """68 landmarks (68, 2) moved by the similarity that best puts their four patch centres on `centres` (4, 2)."""
    from facegan.faces.align import transform_points, umeyama

    own = np.stack([patch_centres(shape)[k] for k in PATCHES])
    return transform_points(shape, umeyama(own, centres))


def landmarks_from_centres(centres: np.ndarray) -> np.ndarray:
    """(N, 4, 2) patch centres -> (N, 68, 2): the canonical frontal shape (faces/template_68.json) on each
    row's centres (for synthetic pairs, which have no landmarks of their own)."""
    from facegan.faces.align import load_template

    return np.stack([shape_on_centres(load_template(), c) for c in np.asarray(centres, np.float64)])


def to_image(cin: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 3, 3, 1, 1), nn.Tanh())


class GlobalPathway(nn.Module):
    def __init__(self, width: int, z_dim: int, size: int, mirror_input: bool = False, prior_input: bool = False):
        super().__init__()
        w, self.bottom, self.mirror_input = width, size // 16, mirror_input
        self.e0, self.e1 = conv(3 * (1 + mirror_input + prior_input), w, 7), conv(w, w, 5, 2)
        self.e2, self.e3, self.e4 = conv(w, 2 * w, 3, 2), conv(2 * w, 4 * w, 3, 2), conv(4 * w, 8 * w, 3, 2)
        self.fc = nn.Linear(8 * w * self.bottom ** 2, 512)          # maxout over pairs -> 256
        self.from_code = nn.Linear(256 + z_dim, 2 * w * self.bottom ** 2)
        self.d8 = up(2 * w + 8 * w, 4 * w)                           # S/16 -> S/8
        self.d4 = up(4 * w + 4 * w, 2 * w)                           # -> S/4
        self.d2 = up(2 * w + 2 * w + 3, w)                           # -> S/2
        self.d1 = up(w + w + 3, w)                                   # -> S
        self.image4, self.image2 = to_image(2 * w), to_image(w)
        self.z_dim, self.width = z_dim, w

    def forward(self, x, z, prior=None):
        """-> (features at S, image at S/2, image at S/4, the 256-d code); `prior` (the frontal prior) is read
        beside the input."""
        if self.mirror_input:   # the input beside its mirror image (the authors' code): the hidden half's cue
            x = torch.cat([x, x.flip(3)], 1)
        if prior is not None:
            x = torch.cat([x, prior.to(x.dtype)], 1)
        e0 = self.e0(x)
        e1 = self.e1(e0)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        e4 = self.e4(e3)
        code = self.fc(e4.flatten(1)).view(len(x), 256, 2).amax(2)
        start = F.relu(self.from_code(torch.cat([code, z.to(code.dtype)], 1)))
        start = start.view(len(x), 2 * self.width, self.bottom, self.bottom)
        d4 = self.d4(torch.cat([self.d8(torch.cat([start, e4], 1)), e3], 1))   # S/4
        image4 = self.image4(d4)
        d2 = self.d2(torch.cat([d4, e2, image4], 1))                            # S/2
        image2 = self.image2(d2)
        d1 = self.d1(torch.cat([d2, e1, image2], 1))                            # S
        return d1, image2, image4, code


class LocalPathway(nn.Module):
    """An encoder-decoder with skips on one patch -> (features, patch image)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        channels = [width * 2 ** i for i in range(depth + 1)]
        self.encoder = nn.ModuleList([conv(3, channels[0])] +
                                     [conv(channels[i], channels[i + 1], 3, 2) for i in range(depth)])
        self.decoder = nn.ModuleList(up(channels[i + 1] + (channels[i + 1] if i + 1 < depth else 0), channels[i])
                                     for i in reversed(range(depth)))
        self.fuse = conv(2 * channels[0], channels[0], 3, 1, "relu")
        self.image = to_image(channels[0])

    def forward(self, patch):
        skips = []
        x = patch
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x)
            skip = skips.pop()
            x = torch.cat([x, skip], 1) if skips else self.fuse(torch.cat([x, skip], 1))
        return x, self.image(x)


class TwoPathwayGenerator(nn.Module):
    def __init__(self, width: int, local_width: int, z_dim: int, size: int, mirror_input: bool = False,
                 id_classes: int = 64, prior: bool = False, shading: int = 0):
        super().__init__()
        self.size, self.sizes = size, patch_sizes(size)
        self.global_pathway = GlobalPathway(width, z_dim, size, mirror_input, prior)
        # the training person read from the code (the authors' code: a softmax over Multi-PIE's people)
        self.identity_head = nn.Linear(256, id_classes)
        self.local = nn.ModuleDict({name: LocalPathway(local_width, 3 if size >= 128 else 2) for name in PATCHES})
        self.fusion = nn.Sequential(conv(width + local_width + 3, width, 3, 1, "relu"), to_image(width))
        # with the frontal prior: a per-pixel weight m of the prior against the drawn image (ours), starting at
        # m = sigmoid(4) = 0.98, so G starts from the warped input and learns where to draw instead (from
        # sigmoid(2) = 0.88, 3-minute runs kept less of the prior: rank-1 at 90 degrees 0.26 against 0.29)
        self.prior_mask = None
        if prior:
            self.prior_mask = nn.Conv2d(width + local_width + 3 + 3, 1, 3, 1, 1)
            nn.init.zeros_(self.prior_mask.weight)
            nn.init.constant_(self.prior_mask.bias, 4.0)
        # prior_shading n > 0 (ours): the prior relit before the blend, prior (1 + gain) + offset, gain and offset
        # per colour on an n x n grid read from the code and spread bilinearly; zero at the start. A profile's
        # visible side is lit and exposed unlike the frontal camera's view of it, and the warp keeps its colours
        self.shading = None
        if prior and shading:
            self.shading_grid = shading
            self.shading = nn.Linear(256, 2 * 3 * shading * shading)
            nn.init.zeros_(self.shading.weight)
            nn.init.zeros_(self.shading.bias)

    def crop(self, images: torch.Tensor, centres: torch.Tensor, name: str) -> torch.Tensor:
        """Each image's patch `name` around its own centre (centres: (N, 4, 2) pixels)."""
        k = PATCHES.index(name)
        boxes = [patch_box(c, self.sizes[name], self.size) for c in centres[:, k].tolist()]
        return torch.stack([images[i, :, y0:y1, x0:x1] for i, (x0, y0, x1, y1) in enumerate(boxes)])

    def place(self, patch: torch.Tensor, box) -> torch.Tensor:
        """A patch-sized map on an S x S canvas of zeros at box (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = box
        return F.pad(patch, (x0, self.size - x1, y0, self.size - y1))

    def forward(self, x, centres, template, z, prior=None) -> dict[str, torch.Tensor]:
        """x (N, 3, S, S), centres (N, 4, 2) its patch centres, template (4, 2) theirs in the frontal view, z
        the noise; prior (N, 3, S, S): the frontal prior (frontal_prior), required when G blends one."""
        if (prior is None) != (self.prior_mask is None):
            raise ValueError("this G " + ("blends a frontal prior: pass prior=" if prior is None else
                                          "was built without a frontal prior: do not pass one"))
        global_features, image2, image4, code = self.global_pathway(x, z, prior)
        canvas, patches = None, {}
        for name, pathway in self.local.items():
            features, patches[name] = pathway(self.crop(x, centres, name))
            box = patch_box(template[PATCHES.index(name)].tolist(), self.sizes[name], self.size)
            placed = self.place(features, box)
            canvas = placed if canvas is None else torch.maximum(canvas, placed)   # max fusion
        up2 = F.interpolate(image2, scale_factor=2, mode="bilinear", align_corners=False)
        fused = torch.cat([global_features, canvas, up2], 1)
        image = self.fusion(fused)
        out = {}
        if prior is not None and self.shading is not None:
            prior = relit(prior.float(), self.shading(code).float().view(len(x), 2, 3, self.shading_grid,
                                                                          self.shading_grid))
        if prior is not None:   # image = m prior + (1 - m) drawn
            mask = torch.sigmoid(self.prior_mask(torch.cat([fused, prior.to(fused.dtype)], 1)).float())
            out = {"drawn": image, "prior_mask": mask}
            image = mask * prior.float() + (1 - mask) * image.float()
        out |= {"image": image, "image2": image2, "image4": image4, **{f"patch_{k}": v for k, v in patches.items()}}
        out["identity_logits"] = self.identity_head(code)
        return out


def relit(prior: torch.Tensor, shading: torch.Tensor) -> torch.Tensor:
    """prior (N, 3, S, S) in [-1, 1] under shading (N, 2, 3, n, n): prior (1 + gain) + offset, the grids
    spread bilinearly over S x S."""
    field = F.interpolate(shading.flatten(1, 2), size=prior.shape[-2:], mode="bilinear", align_corners=False)
    gain, offset = field.view(len(prior), 2, 3, *prior.shape[-2:]).unbind(1)
    return prior * (1 + gain) + offset


def mirror_half(x, frontal, centres, yaws, batch, generator):
    """Flip a random half of the pairs (ours: the pairs' people seen mirrored, 24 faces -> 48 to learn
    from): input and frontal mirrored, the patch centres' x -> S - 1 - x with the two eyes' roles
    swapped (the image-left eye is again the left_eye patch), the yaw negated, the frontal's features
    those of its mirror image (the feature cache's `_mirrored`)."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    side = x.shape[-1]
    mirrored = centres.clone()
    mirrored[..., 0] = side - 1 - mirrored[..., 0]
    eyes = [PATCHES.index("left_eye"), PATCHES.index("right_eye")]
    mirrored[:, eyes] = mirrored[:, eyes[::-1]]
    pick = lambda a, b: torch.where(flip.view(-1, *[1] * (a.dim() - 1)), b, a)   # noqa: E731
    features = {k: pick(batch[f"frontal_{k}"], batch[f"frontal_{k}_mirrored"]) for k in ("pool", "embedding")}
    return (pick(x, x.flip(-1)), pick(frontal, frontal.flip(-1)), pick(centres, mirrored), pick(yaws, -yaws),
            features)


class PatchDiscriminator(nn.Module):
    """Strided convs to S/16, then a 3 x 3 conv to one logit per cell."""

    def __init__(self, width: int):
        super().__init__()
        layers, cin = strided_layers(width, 4, norm_first=False)
        layers.append(nn.Conv2d(cin, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def feature_distance(fake: torch.Tensor, real: torch.Tensor, kind: str) -> torch.Tensor:
    """L_ip's distance of one feature layer: the paper's mean |F(G(I_P)) - F(I_F)| ("l1"), or 1 - cos ("cosine",
    ours): FaceNet's unit 512-d embedding differs by ~0.03 per dimension between people, so the paper's L1
    with its weight (tuned to Light-CNN) is ~1e-4 of L_pixel; 1 - cos spans 0 .. 1 whatever the layer's scale."""
    if kind == "l1":
        return (fake - real).abs().mean()
    return (1 - F.cosine_similarity(fake, real, dim=1)).mean()


def symmetry_loss(images: torch.Tensor) -> torch.Tensor:
    """1/(W/2 H) sum over the left half of |I(x, y) - I(W - x + 1, y)| (= the mean over the whole image)."""
    return (images.float() - images.float().flip(3)).abs().mean()


class TPGAN(TransformMethod):
    name = "tpgan"
    flip_augment = False          # the labels hold landmark positions
    losses = ("loss_d", "loss_pixel", "loss_pixel_local", "loss_sym", "loss_adv", "loss_ip", "loss_id", "loss_tv",
              "loss_drawn", "loss_g")
    headline = (Metric("psnr", "higher"),
                Metric("collapse_min", "higher", "collapse (min over yaw)",
                       note="outputs' spread across people over their true frontals' (1 distinct, 0 one face), "
                            "the smaller of pixels and dlib descriptors"),
                Metric("rank1_facenet_raw_with_distractors", "context", "rank-1 raw → frontalized (FaceNet, 30 people)",
                       "rank1_facenet_frontalized_with_distractors"),
                Metric("rank1_dlib_raw_with_distractors", "context", beside="rank1_dlib_frontalized_with_distractors"),
                Metric("face_region_rank1_facenet_raw_with_distractors", "context",
                       "face region only: rank-1 raw → frontalized (FaceNet)",
                       "face_region_rank1_facenet_frontalized_with_distractors",
                       note="every image cut to its face: clothes and background shared with the gallery no longer "
                            "help"))

    def __init__(self, params, common, image_size: int = 128):
        super().__init__(params, common, image_size)
        size = self.size = image_size
        self.G = TwoPathwayGenerator(params.width, params.local_width, params.z_dim, size, params.mirror_input,
                                     params.id_classes, params.frontal_prior, params.prior_shading)
        self.D = PatchDiscriminator(params.d_width)
        # ema_decay > 0: frontalising uses an exponential moving average of G (registered, so saved)
        self.average = EMA(self.G, params.ema_decay) if params.ema_decay > 0 else None
        if self.average is not None:
            self.G_ema = self.average.shadow
        # set by prepare() from the training labels, saved with the weights (the CLI frames photos with them)
        self.register_buffer("template", torch.zeros(len(PATCHES), 2))              # frontal patch centres
        self.register_buffer("yaw_model", torch.zeros(3, len(PATCHES), 2))          # centres as a function of yaw
        # set by fit_to_training_data from the training inputs' 68 landmarks (the frontal prior's spline)
        self.register_buffer("shape_template", torch.zeros(68, 2))                   # mean frontal landmarks
        self.register_buffer("shape_model", torch.zeros(3, 68, 2))                   # landmarks as a function of yaw
        self.register_buffer("shapes_fitted", torch.zeros((), dtype=torch.bool))
        self.f = None

    def setup(self, root: Path, device) -> None:
        self.attach_facenet(root, device)

    def prepare(self, labels: torch.Tensor | None) -> None:
        """The frontal template: mean patch centres of the frontal (yaw 0) training inputs; and the
        yaw model of the centres refitted on the per-yaw means (for framing photos of unknown pose)."""
        if labels is None or labels.shape[1] != LABEL_COLUMNS:
            raise ValueError(f"tpgan needs labels of {LABEL_COLUMNS} columns (4 patch centres x, y and the yaw)")
        centres, yaws = labels[:, :8].view(-1, 4, 2).cpu().numpy(), labels[:, 8].cpu().numpy()
        if not (yaws == 0).any():
            raise ValueError("tpgan: no frontal (yaw 0) image among the training inputs: no frontal template")
        distinct = sorted(set(yaws.tolist()))
        self.template.copy_(torch.from_numpy(centres[yaws == 0].mean(0)))
        if len(distinct) >= 3:
            model = fit_yaw_model(distinct, np.stack([centres[yaws == y].mean(0) for y in distinct]))
            self.yaw_model.copy_(torch.from_numpy(model).float())

    def fit_to_training_data(self, batches) -> None:
        """The frontal prior's shapes from the training inputs' 68 landmarks (values 'landmarks')."""
        if self.params.frontal_prior:
            values = batches.all_values()
            if "landmarks" not in values:
                raise KeyError("tpgan's frontal prior needs the training inputs' 68 landmarks (values 'landmarks', "
                               "training_data provides them)")
            self.fit_shapes(values["landmarks"].view(-1, 68, 2), batches.labels[:, 8])

    @torch.no_grad()
    def fit_shapes(self, landmarks: torch.Tensor, yaws: torch.Tensor) -> None:
        """shape_template: the mean landmarks (N, 68, 2) of the frontal inputs; shape_model: the per-yaw means'
        yaw model (faces/pose.py), which places all 68 points at any yaw (landmarks_at)."""
        landmarks, yaws = landmarks.float().cpu().numpy(), yaws.cpu().numpy()
        distinct = sorted(set(yaws.tolist()))
        if 0 not in distinct or len(distinct) < 3:
            raise ValueError(f"tpgan's frontal prior needs training inputs at yaw 0 and 3 or more yaws, got {distinct}")
        self.shape_template.copy_(torch.from_numpy(landmarks[yaws == 0].mean(0)))
        model = fit_yaw_model(distinct, np.stack([landmarks[yaws == y].mean(0) for y in distinct]))
        self.shape_model.copy_(torch.from_numpy(model).float())
        self.shapes_fitted.fill_(True)

    def landmarks_at(self, centres: torch.Tensor, yaws: torch.Tensor) -> torch.Tensor:
        """68 landmarks of each input: the yaw model's shape at its yaw, put on its four patch centres by a
        similarity (the same at training and at use: beyond ~45 degrees no detector gives 68 points)."""
        if not self.shapes_fitted:
            raise RuntimeError("tpgan's frontal prior needs its shapes: fit_to_training_data (the training loop "
                               "calls it) or fit_shapes first")
        model = self.shape_model.cpu().numpy().astype(np.float64)
        shapes = [shape_on_centres(predict_landmarks(model, float(y)), c)
                  for c, y in zip(centres.float().cpu().numpy(), yaws.float().cpu().numpy())]
        return torch.from_numpy(np.stack(shapes)).to(centres.device)

    def prior_of(self, x: torch.Tensor, centres: torch.Tensor, yaws: torch.Tensor) -> torch.Tensor | None:
        """The frontal prior G reads and blends (None when train.tpgan.frontal_prior is off)."""
        if not self.params.frontal_prior:
            return None
        return frontal_prior(x, self.landmarks_at(centres, yaws), self.shape_template.to(x.device),
                             yaws.to(x.device), self.params.prior_mirror_at)

    def yaws_of(self, centres: torch.Tensor) -> torch.Tensor:
        """Each input's yaw from its patch centres: the Multi-PIE yaw whose yaw-model centres it fits best
        after a similarity (as `frame` estimates it)."""
        return torch.tensor([self.best_yaw(c.astype(np.float64))[1] for c in centres.float().cpu().numpy()],
                            dtype=torch.float32)

    def best_yaw(self, found: np.ndarray, candidates=None):
        """(residual, yaw, similarity, the yaw's centres) for the candidate yaw (default: every Multi-PIE one)
        whose centres (4, 2) `found` fits best after a similarity."""
        from facegan.faces.align import transform_points, umeyama

        best = None
        for candidate in candidates or self.YAWS:
            target = self.centres_at(candidate).astype(np.float64)
            matrix = umeyama(found, target)
            residual = float(np.linalg.norm(transform_points(found, matrix) - target, axis=1).mean())
            if best is None or residual < best[0]:
                best = (residual, candidate, matrix, target)
        return best

    def trainable(self):
        return {"G": self.G, "D": self.D}

    def after_step(self, step):
        if self.average is not None:
            self.average.update(unwrap(self.G), step)

    def configure_optimizers(self):
        p = self.params
        return {"G": adam(unwrap(self.G).parameters(), p.lr, (p.beta1, 0.999)),
                "D": adam(unwrap(self.D).parameters(), p.lr, (p.beta1, 0.999))}

    def noise(self, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        return torch.randn(n, self.params.z_dim, generator=generator).to(device)

    def target_patches(self, frontal: torch.Tensor) -> dict[str, torch.Tensor]:
        """The true frontal's patches at the template positions (the local pathways' targets)."""
        g = unwrap(self.G)
        return {name: g.crop(frontal, self.template.expand(len(frontal), -1, -1), name) for name in PATCHES}

    def train_step(self, batch, step, generator):
        if self.f is None:
            raise RuntimeError("tpgan needs FaceNet for L_ip: call setup(root) (the training loop does)")
        p, opt = self.params, self.optimizers
        x, frontal = batch["image"], batch["frontal"]
        centres, yaws = batch["attributes"][:, :8].reshape(-1, 4, 2), batch["attributes"][:, 8]
        frontal_features = {k: batch[f"frontal_{k}"] for k in ("pool", "embedding")}
        if p.mirror_augment:
            x, frontal, centres, yaws, frontal_features = mirror_half(x, frontal, centres, yaws, batch, generator)
        z = self.noise(len(x), generator, x.device)
        prior = self.prior_of(x, centres, yaws)

        # ---------------- D: true frontals vs synthesised ones
        with torch.no_grad():
            fake = self.G(x, centres, self.template, z, prior)["image"]
        loss_d = bce(self.D(frontal), True) + bce(self.D(fake.detach()), False)
        opt["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["D"].step()

        # ---------------- G: L_syn
        out = self.G(x, centres, self.template, z, prior)
        frontal_f = frontal.float()
        scales = [(out["image"], frontal_f), (out["image2"], F.avg_pool2d(frontal_f, 2)),
                  (out["image4"], F.avg_pool2d(frontal_f, 4))]
        loss_pixel_global = sum(F.l1_loss(a.float(), b) for a, b in scales) / len(scales)
        targets = self.target_patches(frontal_f)
        loss_pixel_local = sum(F.l1_loss(out[f"patch_{k}"].float(), targets[k]) for k in PATCHES) / len(PATCHES)
        loss_pixel = loss_pixel_global + loss_pixel_local
        loss_sym = symmetry_loss(out["image"])
        loss_adv = bce(self.D(out["image"]), True)
        if p.lambda_ip:   # the true frontal's features: cached (batch["frontal_<kind>"])
            fake_features = self.f.features(out["image"])
            loss_ip = sum(feature_distance(fake_features[k].float(), frontal_features[k], p.ip_loss)
                          for k in ("pool", "embedding"))
        else:             # no FaceNet pass (most of a step's time) for a term that is off
            loss_ip = torch.zeros((), device=x.device)
        if "identity" in batch:
            loss_id = F.cross_entropy(out["identity_logits"].float(), batch["identity"].long().flatten())
        elif p.lambda_id:
            raise KeyError("tpgan's identity term (lambda_id > 0) needs the batch's 'identity' (training_data)")
        else:
            loss_id = torch.zeros((), device=x.device)
        loss_tv = total_variation(out["image"])
        loss_drawn = (1 - out["prior_mask"]).mean() if prior is not None else torch.zeros((), device=x.device)
        loss_g = loss_pixel + p.lambda_sym * loss_sym + p.lambda_adv * loss_adv + p.lambda_ip * loss_ip \
            + p.lambda_id * loss_id + p.lambda_tv * loss_tv + p.lambda_prior * loss_drawn
        opt["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["G"].step()
        return {"loss_d": loss_d.item(), "loss_pixel": loss_pixel.item(), "loss_pixel_local": loss_pixel_local.item(),
                "loss_sym": loss_sym.item(), "loss_adv": loss_adv.item(), "loss_ip": loss_ip.item(),
                "loss_id": loss_id.item(), "loss_tv": loss_tv.item(), "loss_drawn": loss_drawn.item(),
                "loss_g": loss_g.item()}

    def progress_probe(self, root, labels, n):
        """Rank-1 identification (FaceNet, cosine) of up to n frontalized test inputs at |yaw| >= 60
        among ALL the people's true frontals under the same flash (cached features): the evaluation's
        gallery with distractors. The training people's frontals are G's own targets, so a G that
        redraws the faces it learnt (not the person in the input) is caught here, not only at the end."""
        from facegan.data.datasets import read_image_set, to_tensor
        from facegan.data.multipie import FRONTAL_CAMERA, load_pairs
        from facegan.metrics.frontalization import rank1
        from facegan.pretrained.features import load_features, multipie_frontal_name

        test = load_pairs(root, "test", self.size)
        rows = test["rows"]
        large = np.flatnonzero(rows["yaw"].abs().to_numpy() >= 60)
        chosen = np.random.default_rng(self.common.seed).permutation(large)[:n]
        _, frame = read_image_set(Path(root) / "data" / "multipie")
        frontal = frame[frame["camera"].astype(int) == int(FRONTAL_CAMERA)]
        gallery = load_features(root, multipie_frontal_name(self.size), frontal["path"])["embedding"]
        gallery_flash, gallery_ids = frontal["flash"].astype(int).to_numpy(), frontal["identity"].astype(str).to_numpy()
        probes = to_tensor(test["inputs"][chosen])
        centres = torch.from_numpy(test["labels"][chosen, :8].reshape(-1, 4, 2))
        flash, ids = rows["flash"].to_numpy()[chosen], rows["identity"].to_numpy()[chosen]

        @torch.no_grad()
        def rank1_large_yaw() -> dict[str, float]:
            outputs = self.frontalize(probes, centres)
            self.G.train()
            embeddings = torch.cat([self.f(x.to(self.device())).float().cpu() for x in outputs.split(64)]).numpy()
            hits = [rank1(embeddings[flash == f], ids[flash == f], gallery[gallery_flash == f],
                          gallery_ids[gallery_flash == f], "cosine") for f in np.unique(flash)]
            return {f"rank1_yaw60plus_with_distractors_{len(chosen)}": float(np.concatenate(hits).mean())}
        return rank1_large_yaw

    # ---------------------------------------------------------------- use
    def transform(self, crops, yaw=None, centres: torch.Tensor | None = None) -> Transformed:
        """Crops in the Multi-PIE frame -> frontal faces. The local pathways' patches are placed at
        `centres` (N, 4, 2) when given (the test set's landmarks), else at the yaw model's centres for
        `yaw` (one angle in degrees, or one per crop: what `frame` returns)."""
        yaws = None if yaw is None else torch.from_numpy(
            np.broadcast_to(np.asarray(yaw, np.float32), (len(crops),)).copy())
        if centres is None:
            if yaws is None:
                raise RequestError("tpgan needs the yaw of each face (or its patch centres) to place the patches")
            centres = torch.from_numpy(np.stack([self.centres_at(float(y)) for y in yaws]).astype(np.float32))
            notes = [f"yaw {y:+.0f} degrees" for y in yaws.tolist()]
        else:
            notes = ["frontalized" for _ in range(len(crops))]
        return Transformed(self.frontalize(crops, centres, yaws), {}, notes)

    @torch.no_grad()
    def frontalize(self, photos: torch.Tensor, centres: torch.Tensor, yaws: torch.Tensor | None = None,
                   batch: int = 32) -> torch.Tensor:
        """(N, 3, S, S) crops in the Multi-PIE frame and their (N, 4, 2) patch centres -> frontal faces; the
        yaws (N,), which the frontal prior needs, are estimated from the centres when not given (yaws_of).
        z = 0 (the mean of the noise) for a deterministic output."""
        from facegan.devices import inference_autocast

        if yaws is None and self.params.frontal_prior:
            yaws = self.yaws_of(centres)
        device, g = self.device(), (self.G_ema if self.average is not None else self.G).eval()
        out = []
        with inference_autocast(device):
            for i in range(0, len(photos), batch):
                x, c = photos[i:i + batch].to(device), centres[i:i + batch].to(device)
                prior = self.prior_of(x, c, yaws[i:i + batch]) if self.params.frontal_prior else None
                z = torch.zeros(len(x), self.params.z_dim, device=device)
                out.append(g(x, c, self.template, z, prior)["image"].float().cpu())
        return torch.cat(out)

    def centres_at(self, yaw: float) -> np.ndarray:
        """(4, 2) patch centres at `yaw` from the model fitted in prepare()."""
        return predict_landmarks(self.yaw_model.cpu().numpy().astype(np.float64), yaw)

    YAWS = tuple(range(-90, 91, 15))

    def frame(self, image: np.ndarray, landmarks: np.ndarray | None, align=None, yaw: float | None = None):
        """A photo into the training crops' frame: the similarity that maps the photo's four patch
        centres (from its 68 landmarks) onto the yaw model's centres at `yaw`, or, when yaw is
        None, at the Multi-PIE yaw whose centres it fits best (least mean residual after the
        similarity). Returns (S x S crop, {"yaw": yaw}). Beyond ~45 degrees dlib's landmarks are
        unreliable, so the estimate and the framing are too: give the yaw. Without landmarks the
        photo is taken as already framed like Multi-PIE's (or UMIST's) crops: padded square and
        resized, which needs the yaw."""
        from facegan.data.multipie import pad_to_square, resize_square
        from facegan.faces.align import square_matrix, warp

        if landmarks is None:
            if yaw is None:
                raise RequestError("a photo used as framed needs its yaw: without detection the yaw places the "
                                   "patches")
            return Framed(resize_square(pad_to_square(image), self.size), {"yaw": float(yaw)},
                          square_matrix(image.shape, self.size), self.framed_outline())

        found = np.stack([patch_centres(landmarks)[k] for k in PATCHES]).astype(np.float64)
        _, chosen, matrix, _ = self.best_yaw(found, None if yaw is None else [yaw])
        return Framed(warp(image, matrix, self.size), {"yaw": float(chosen)}, matrix, self.framed_outline())

    def framed_outline(self) -> np.ndarray:
        """Where the frontalised face lies in the crop: an ellipse around the frontal patch centres
        (the yaw model at 0 degrees), from above the brows to below the mouth."""
        from facegan.faces.paste import ellipse_outline

        left, right, _, mouth = self.centres_at(0).astype(np.float64)
        eyes = (left + right) / 2
        drop = mouth[1] - eyes[1]
        return ellipse_outline(((eyes[0] + mouth[0]) / 2, 0), 1.05 * np.linalg.norm(right - left),
                               eyes[1] - 1.1 * drop, mouth[1] + 0.75 * drop)

    def sample_grid(self, generator):
        """Rows of 8: training inputs, their frontalisation, the true frontals."""
        if self.examples is None:
            raise RuntimeError("tpgan.sample_grid needs example pairs (start_training sets them)")
        centres, yaws = self.examples["attributes"][:8, :8].reshape(-1, 4, 2), self.examples["attributes"][:8, 8]
        out = self.frontalize(self.examples["image"][:8], centres, yaws).to(centres.device)
        self.G.train()
        return torch.cat([self.examples["image"][:8].float(), out.float(), self.examples["frontal"][:8].float()])

    # ---------------------------------------------------------------- data and evaluation
    @staticmethod
    def training_data(root, params) -> TrainingData:
        """Inputs (any yaw) of the training people, labels (N, 9): patch centres and yaw; paired
        'frontal': the frontal image of the same person, session, recording and flash; values
        'frontal_pool', 'frontal_embedding': FaceNet's features of that frontal (the feature cache)."""
        from facegan.data.multipie import load_pairs
        from facegan.pretrained.features import KINDS, load_features, multipie_frontal_name

        data = load_pairs(root, "train", params.size)
        f = load_features(root, multipie_frontal_name(params.size), data["rows"]["frontal_path"], KINDS,
                          mirrored=params.mirror_augment)
        people, identity = np.unique(data["rows"]["identity"].to_numpy(), return_inverse=True)
        if len(people) > params.id_classes:
            raise ValueError(f"train.tpgan.id_classes = {params.id_classes} outputs for the identity head, but "
                             f"{len(people)} people train: raise it to at least {len(people)}")
        return TrainingData(data["inputs"], data["labels"], paired={"frontal": data["frontals"]},
                            values={**{f"frontal_{k}": (v, None) for k, v in f.items()},
                                    "identity": (identity[:, None].astype(np.float32), None),
                                    "landmarks": (data["input_landmarks"].reshape(len(identity), 136), None)})

    @staticmethod
    def synthetic_data(params, n, image_size, seed=0) -> TrainingData:
        """Inputs at several yaws (some frontal) with jittered patch centres, random frontals and features."""
        rng = np.random.default_rng(seed)
        centres = np.array([[22, 27], [42, 27], [32, 38], [32, 48]], np.float32) * image_size / 64
        jitter = rng.normal(0, 2, (n, 4, 2)).astype(np.float32)
        yaws = np.array([[-90, -45, 0, 15, 60, 0][i % 6] for i in range(n)], np.float32)
        labels = np.concatenate([(centres + jitter).reshape(n, 8), yaws[:, None]], 1)
        pool, embedding = np.abs(rng.normal(size=(n, 1792))).astype(np.float32), random_unit(rng, n)
        identity = (np.arange(n) % min(n, params.id_classes)).astype(np.float32)[:, None]
        features = {"frontal_pool": (pool, None), "frontal_embedding": (embedding, None)}
        if params.mirror_augment:
            features.update({f"{k}_mirrored": (v[0][::-1].copy(), None) for k, v in features.items()})
        landmarks = landmarks_from_centres(labels[:, :8].reshape(n, 4, 2)).reshape(n, 136).astype(np.float32)
        return TrainingData(random_images(rng, n, image_size), labels,
                            paired={"frontal": random_images(rng, n, image_size)},
                            values={**features, "identity": (identity, None), "landmarks": (landmarks, None)})

    def evaluate(self, context) -> dict:
        """Rank-1 identification across pose, raw vs frontalized (metrics/frontalization.py)."""
        from facegan.metrics.frontalization import evaluate_frontalization

        def frontalize(crops, centres):
            return self.transform(crops, centres=centres).output

        return evaluate_frontalization(frontalize, self.centres_at, self.f, self.size, context)
