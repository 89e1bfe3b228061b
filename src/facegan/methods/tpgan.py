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

Departures: 64 x 64 by default (`size`; the paper's 128 selectable): four
times the steps in a CPU budget; FaceNet for Light-CNN; the symmetry loss on pixels only (the paper
also uses it in Laplacian space); plain conv blocks instead of the paper's
residual blocks, and channel widths scaled down (`width`, `local_width`) for
a CPU; D's architecture, not given in the paper, is ours; local pathways go
down 3 times at S = 128, 2 times at S = 64.

What a 3-minute CPU run reaches (issue 23; ~370 steps at 64 px; FaceNet
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

from facegan.faces.pose import PATCHES, fit_yaw_model, patch_box, predict_landmarks
from facegan.methods.base import (Metric, RequestError, TrainingData, TransformMethod, Transformed,
                                  random_images, random_unit, unwrap)
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


def to_image(cin: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 3, 3, 1, 1), nn.Tanh())


class GlobalPathway(nn.Module):
    def __init__(self, width: int, z_dim: int, size: int, mirror_input: bool = False):
        super().__init__()
        w, self.bottom, self.mirror_input = width, size // 16, mirror_input
        self.e0, self.e1 = conv(6 if mirror_input else 3, w, 7), conv(w, w, 5, 2)
        self.e2, self.e3, self.e4 = conv(w, 2 * w, 3, 2), conv(2 * w, 4 * w, 3, 2), conv(4 * w, 8 * w, 3, 2)
        self.fc = nn.Linear(8 * w * self.bottom ** 2, 512)          # maxout over pairs -> 256
        self.from_code = nn.Linear(256 + z_dim, 2 * w * self.bottom ** 2)
        self.d8 = up(2 * w + 8 * w, 4 * w)                           # S/16 -> S/8
        self.d4 = up(4 * w + 4 * w, 2 * w)                           # -> S/4
        self.d2 = up(2 * w + 2 * w + 3, w)                           # -> S/2
        self.d1 = up(w + w + 3, w)                                   # -> S
        self.image4, self.image2 = to_image(2 * w), to_image(w)
        self.z_dim, self.width = z_dim, w

    def forward(self, x, z):
        """-> (features at S, image at S/2, image at S/4, the 256-d code)."""
        if self.mirror_input:   # the input beside its mirror image (the authors' code): the hidden half's cue
            x = torch.cat([x, x.flip(3)], 1)
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
                 id_classes: int = 64):
        super().__init__()
        self.size, self.sizes = size, patch_sizes(size)
        self.global_pathway = GlobalPathway(width, z_dim, size, mirror_input)
        # the training person read from the code (the authors' code: a softmax over Multi-PIE's people)
        self.identity_head = nn.Linear(256, id_classes)
        self.local = nn.ModuleDict({name: LocalPathway(local_width, 3 if size >= 128 else 2) for name in PATCHES})
        self.fusion = nn.Sequential(conv(width + local_width + 3, width, 3, 1, "relu"), to_image(width))

    def crop(self, images: torch.Tensor, centres: torch.Tensor, name: str) -> torch.Tensor:
        """Each image's patch `name` around its own centre (centres: (N, 4, 2) pixels)."""
        k = PATCHES.index(name)
        boxes = [patch_box(c, self.sizes[name], self.size) for c in centres[:, k].tolist()]
        return torch.stack([images[i, :, y0:y1, x0:x1] for i, (x0, y0, x1, y1) in enumerate(boxes)])

    def place(self, patch: torch.Tensor, box) -> torch.Tensor:
        """A patch-sized map on an S x S canvas of zeros at box (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = box
        return F.pad(patch, (x0, self.size - x1, y0, self.size - y1))

    def forward(self, x, centres, template, z) -> dict[str, torch.Tensor]:
        global_features, image2, image4, code = self.global_pathway(x, z)
        canvas, patches = None, {}
        for name, pathway in self.local.items():
            features, patches[name] = pathway(self.crop(x, centres, name))
            box = patch_box(template[PATCHES.index(name)].tolist(), self.sizes[name], self.size)
            placed = self.place(features, box)
            canvas = placed if canvas is None else torch.maximum(canvas, placed)   # max fusion
        up2 = F.interpolate(image2, scale_factor=2, mode="bilinear", align_corners=False)
        image = self.fusion(torch.cat([global_features, canvas, up2], 1))
        out = {"image": image, "image2": image2, "image4": image4, **{f"patch_{k}": v for k, v in patches.items()}}
        out["identity_logits"] = self.identity_head(code)
        return out


def mirror_half(x, frontal, centres, batch, generator):
    """Flip a random half of the pairs (ours: the pairs' people seen mirrored, 24 faces -> 48 to learn
    from): input and frontal mirrored, the patch centres' x -> S - 1 - x with the two eyes' roles
    swapped (the image-left eye is again the left_eye patch), the frontal's features those of its
    mirror image (the feature cache's `_mirrored`)."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    side = x.shape[-1]
    mirrored = centres.clone()
    mirrored[..., 0] = side - 1 - mirrored[..., 0]
    eyes = [PATCHES.index("left_eye"), PATCHES.index("right_eye")]
    mirrored[:, eyes] = mirrored[:, eyes[::-1]]
    pick = lambda a, b: torch.where(flip.view(-1, *[1] * (a.dim() - 1)), b, a)   # noqa: E731
    features = {k: pick(batch[f"frontal_{k}"], batch[f"frontal_{k}_mirrored"]) for k in ("pool", "embedding")}
    return pick(x, x.flip(-1)), pick(frontal, frontal.flip(-1)), pick(centres, mirrored), features


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
              "loss_g")
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
                                     params.id_classes)
        self.D = PatchDiscriminator(params.d_width)
        # set by prepare() from the training labels, saved with the weights (the CLI frames photos with them)
        self.register_buffer("template", torch.zeros(len(PATCHES), 2))              # frontal patch centres
        self.register_buffer("yaw_model", torch.zeros(3, len(PATCHES), 2))          # centres as a function of yaw
        self.f = None

    def setup(self, root: Path, device) -> None:
        from facegan.pretrained.facenet import load_converted

        self.attach_fixed("f", load_converted(root, device))

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

    def trainable(self):
        return {"G": self.G, "D": self.D}

    def configure_optimizers(self):
        p = self.params
        return {"G": torch.optim.Adam(unwrap(self.G).parameters(), p.lr, betas=(p.beta1, 0.999)),
                "D": torch.optim.Adam(unwrap(self.D).parameters(), p.lr, betas=(p.beta1, 0.999))}

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
        centres = batch["attributes"][:, :8].reshape(-1, 4, 2)
        frontal_features = {k: batch[f"frontal_{k}"] for k in ("pool", "embedding")}
        if p.mirror_augment:
            x, frontal, centres, frontal_features = mirror_half(x, frontal, centres, batch, generator)
        z = self.noise(len(x), generator, x.device)

        # ---------------- D: true frontals vs synthesised ones
        with torch.no_grad():
            fake = self.G(x, centres, self.template, z)["image"]
        loss_d = bce(self.D(frontal), True) + bce(self.D(fake.detach()), False)
        opt["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["D"].step()

        # ---------------- G: L_syn
        out = self.G(x, centres, self.template, z)
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
        loss_g = loss_pixel + p.lambda_sym * loss_sym + p.lambda_adv * loss_adv + p.lambda_ip * loss_ip \
            + p.lambda_id * loss_id + p.lambda_tv * loss_tv
        opt["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["G"].step()
        return {"loss_d": loss_d.item(), "loss_pixel": loss_pixel.item(), "loss_pixel_local": loss_pixel_local.item(),
                "loss_sym": loss_sym.item(), "loss_adv": loss_adv.item(), "loss_ip": loss_ip.item(),
                "loss_id": loss_id.item(),
                "loss_tv": loss_tv.item(), "loss_g": loss_g.item()}

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
        if centres is None:
            if yaw is None:
                raise RequestError("tpgan needs the yaw of each face (or its patch centres) to place the patches")
            yaws = np.broadcast_to(np.asarray(yaw, np.float64), (len(crops),))
            centres = torch.from_numpy(np.stack([self.centres_at(float(y)) for y in yaws]).astype(np.float32))
            notes = [f"yaw {y:+.0f} degrees" for y in yaws]
        else:
            notes = ["frontalized" for _ in range(len(crops))]
        return Transformed(self.frontalize(crops, centres), {}, notes)

    @torch.no_grad()
    def frontalize(self, photos: torch.Tensor, centres: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """(N, 3, S, S) crops in the Multi-PIE frame and their (N, 4, 2) patch centres -> frontal faces.
        z = 0 (the mean of the noise) for a deterministic output."""
        from facegan.devices import inference_autocast

        device, g = self.device(), self.G.eval()
        out = []
        with inference_autocast(device):
            for i in range(0, len(photos), batch):
                x = photos[i:i + batch].to(device)
                z = torch.zeros(len(x), self.params.z_dim, device=device)
                out.append(g(x, centres[i:i + batch].to(device), self.template, z)["image"].float().cpu())
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
        from facegan.faces.align import transform_points, umeyama, warp
        from facegan.faces.pose import patch_centres

        if landmarks is None:
            if yaw is None:
                raise RequestError("a photo used as framed needs its yaw: without detection the yaw places the "
                                   "patches")
            return resize_square(pad_to_square(image), self.size), {"yaw": float(yaw)}

        found = np.stack([patch_centres(landmarks)[k] for k in PATCHES]).astype(np.float64)
        best = None
        for candidate in ([yaw] if yaw is not None else self.YAWS):
            target = self.centres_at(candidate).astype(np.float64)
            matrix = umeyama(found, target)
            residual = float(np.linalg.norm(transform_points(found, matrix) - target, axis=1).mean())
            if best is None or residual < best[0]:
                best = (residual, candidate, matrix, target)
        _, chosen, matrix, _ = best
        return warp(image, matrix, self.size), {"yaw": float(chosen)}

    def sample_grid(self, generator):
        """Rows of 8: training inputs, their frontalisation, the true frontals."""
        if self.examples is None:
            raise RuntimeError("tpgan.sample_grid needs example pairs (start_training sets them)")
        centres = self.examples["attributes"][:8, :8].reshape(-1, 4, 2)
        self.G.eval()
        with torch.no_grad():
            out = self.G(self.examples["image"][:8], centres, self.template,
                         torch.zeros(len(centres), self.params.z_dim, device=centres.device))["image"]
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
                                    "identity": (identity[:, None].astype(np.float32), None)})

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
        return TrainingData(random_images(rng, n, image_size), labels,
                            paired={"frontal": random_images(rng, n, image_size)},
                            values={**features, "identity": (identity, None)})

    def evaluate(self, context) -> dict:
        """Rank-1 identification across pose, raw vs frontalized (metrics/frontalization.py)."""
        from facegan.metrics.frontalization import evaluate_frontalization

        def frontalize(crops, centres):
            return self.transform(crops, centres=centres).output

        return evaluate_frontalization(frontalize, self.centres_at, self.f, self.size, context)
