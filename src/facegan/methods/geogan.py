"""GeoGAN (Yin, Liu & Loy, AAAI 2019, arXiv 1811.12670): instance-level attribute transfer.

Give face a (without the attribute y) the attribute that reference face b_y
has, unpaired, with b's attribute moved onto a's geometry. Data: aligned
CelebA train faces with their 68 landmarks (stage `align`); A = faces without
`attribute` (default Smiling), B = faces with it.

Attribute transfer module G(a, b_y):
- flow sub-network: a dense flow f (2 channels, in the normalised coordinates
  of `grid_sample`) that warps b to a's geometry: warp(b)(p) = b(p + f(p)) by a
  differentiable bilinear sampler (Spatial Transformer Networks, Jaderberg et
  al. 2015). `flow: dense` is the paper's: an encoder-decoder from (a, b) to f.
  `flow: landmarks` (default, ours): one landmark estimator reads a's and b's
  68 points from the images and f is the thin-plate spline through them
  (f(p_a,k) = p_b,k - p_a,k); it needs no landmarks at inference either;
- mask network: m = sigmoid(M(a, warp(b))) in [0, 1];
  blend: a* = m * warp(b) + (1 - m) * a;
- refinement (hallucination) sub-network: a_y = clamp(a* + w m 2 tanh(R(a*, a))),
  an appearance residual for skin tone and lighting, inside the mask (w below).
Attribute removal module F(b_y) = b_ybar: an encoder-decoder with a residual
output that removes the attribute.

Objectives (G and F together; D apart):
- L_adv, LSGAN (Mao et al. 2017): D: (D(x) - 1)^2 on real faces, D(x)^2 on
  a_y and b_ybar; G, F: (D(a_y) - 1)^2 + (D(b_ybar) - 1)^2;
- L_cls, domain classification by D's attribute head: D learns y on real
  faces (BCE, weight 1 in D's loss, as in StarGAN); G wants D to see y in
  a_y, F wants it absent from b_ybar (weight lambda_cls);
- L_rec, the cycle: F(a_y) ~ a (removing the transferred attribute gives a
  back) and G(b_ybar, a_y) ~ b_y (transferring it back restores b), L1;
- L_lm: the landmark loss moves b's 68 landmarks by the flow onto a's:
  MSE over k and x, y of l_a,k + f(l_a,k) - l_b,k in grid units (f sampled at
  a's landmarks, since warp(b)(l_a) = b(l_a + f(l_a)) must show b's landmark k);
  L_tv = TV of the flow in pixels keeps a free (dense) flow smooth;
  with `flow: landmarks` also L_points = MSE of the estimator's points to
  dlib's (ours);
- L_mask = mean(m): sparsity, only the attribute's region is pasted.
L_G = L_adv + lambda_cls L_cls + lambda_rec L_rec + lambda_lm L_lm + lambda_points L_points
      + lambda_flow_tv L_tv + lambda_mask L_mask.

Weights: the authors' released training script and code (wdyin/GeoGAN
`scripts/train.sh`, `networks.py`, `faceAnaModel.py`), each beside ours:
lambda_rec 5 (their lambda_gan_feat 5, L1 on pixels; they add VGG-face
features we do not have); lambda_lm 2560 (their LandmarkRegLoss 256 x MSE in
grid units, weighted 10); lambda_flow_tv 1 on the flow in pixels for the dense
flow (their lambda_flow_reg 1 on flow x img_size), 0 for the spline (smooth by
construction; TV only shrinks it). Until issue 20 we weighted the landmark
term 1 (about 1000 x weaker than theirs): warp(b) stayed grotesque and the mask
closed. Three settings depart for the 3-minute run (~45 game steps against
their 100 epochs), each measured on 300 test pairs after 3 minutes:
- lr 1e-3 (theirs 2e-4): Adam moves each weight by about lr a step, so at 2e-4
  the mask logits cannot leave 0 +- 0.5 in 45 steps whatever the loss weights
  (mask sparsity 0.1 -> 2 moved the mean mask off the mouth 0.405 -> 0.396,
  a uniform double exposure, identity 0.845); at 1e-3 it is 0.11 off the mouth
  and 0.23 on it, identity 0.915 of a 0.925 ceiling;
- lambda_cls 3 (theirs 0.2; G and F's, D's own stays 1) and lambda_mask 2
  (theirs 0.1): at lr 1e-3 with cls 1 and mask 1 the mask closes everywhere
  (transfer 0.36); cls 3 with mask 2 keeps it open where the smile is (0.62).

Longer runs must not undo the transfer (issue 20). With the three settings
above and D's attribute head trained on real faces only, a 12-minute run lost
what the 3-minute one had (transfer 0.61 -> 0.26): G won L_cls (0.1) with
faint patterns while the mask closed (mean 0.03). Three further settings, ours,
each measured by evaluate@geogan (transfer / identity of a 0.925 ceiling / FID):
- `d_cls_outputs`: D's head also learns G's outputs a_y as without y (AC-GAN's
  fake-aware classifier), so only a smile a real face would show counts. On
  its own: 0.51 / 0.85 / 57 at 3 minutes (batch 32).
- `mask_free_area` 0.1: sparsity only beyond a tenth of the face (a mouth's
  share); with it 0.50 / 0.89 / 63 at 3 minutes and 0.75 / 0.92 / 44 at 12
  (batch 32): the collapse is gone, but 3 minutes (~70 game steps) leave
  horizontal streaks in the mask and the outputs.
- batch 16 (theirs: 1; our earlier 32): twice the game steps in the budget;
  0.70 / 0.91 / 45 and, run again, 0.71 / 0.89 / 47 at 3 minutes, streaks
  gone; continued to 12 minutes 0.86 / 0.89 / 43. The fresh-clone default
  run (issue 20): 0.61 / 0.91 / 45 at 3 minutes (301 steps), continued to 12
  (821 steps) 0.84 / 0.88 / 44; landmark error after/before 0.52 and 0.48.
  `attribute: Eyeglasses` at the default 3 minutes: 0.77 / 0.86 of a 0.95
  ceiling / FID 100 (against the 70 test faces with glasses).
Tried and not kept: lambda_mask 0.5 (0.67 / 0.87 / 70: double exposure);
moving averages of G's parts for inference (`ema_decay` 0.999: 0.74 / 0.86 / 73,
the averaged mask keeps the early streaks; kept as an option, off);
D's attribute head and L_cls on 2-px-shifted, blurred images (0.09 at 12
minutes: sparsity won).

Why the spline flow (a departure): the paper's image-to-flow network must learn
dense correspondence from 68 points a pair; on 2 CPU cores it alone needs ~900
steps (2.5 min, the whole budget) to bring the landmark error from 2.9 to 1.6
px on test pairs, before any transfer is learned. A landmark estimator learns
from the same labels in ~100 steps (0.8 px a face), and the spline turns its
points into a smooth dense flow. `-S train.geogan.flow=dense` restores theirs.

Which landmarks the flow aligns (`reference_shape`, ours; theirs: all): aligning
all 68 also carries b's mouth points onto a's closed mouth, so warp(b) shows the
donor's smile squeezed shut (the judge sees a smile on 59 % of warped
references). With `reference_shape: [mouth]` the spline runs through the other
48 points and the mouth keeps b's shape (77 %), but the mouth then counts as
misaligned in the landmark figure (after/before 0.63 against 0.47) and at
the default weights the transfer is no better (0.56 against 0.62), so the
default stays the paper's.

Initialisation and schedule: the mask starts near 0.5 (zero output layer,
sigmoid(0); theirs); the refinement residual is scaled by the mask and
refine_weight 0.1 and switched on `refine_start` game steps after the warm-up
(theirs: after 10 of 100 epochs), so training first moves the attribute by the
warp and the mask, not by painting it. The dense flow starts at zero (identity
warp; theirs: random init divided by 10) and is bounded by max_flow tanh
(ours). Warm-up (ours): for `warmup` steps only the parts with real labels
learn: D's attribute head on real a and b, and the landmark
estimator; without it D's attribute head is at chance for the whole short game
(loss_d_cls 0.689 -> 0.678 in 140 steps) and L_cls tells the mask nothing.

Normalisation: instance norm in every network, as theirs. D scores a, b, a_y
and F(b) as separate batches of one class each; with batch norm the per-batch
statistics erased the very difference its attribute head must learn.

Departures: 64 x 64 aligned crops (the paper: 128-256); plain conv
encoder-decoders with skips instead of their residual generators; one D
(patch LSGAN head and a pooled attribute head) instead of a multi-scale one;
D's own classification weighted 1 (StarGAN's convention; theirs lambda_cls);
no VGG-face perceptual term; the spline flow and the warm-up above.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegan.config import ConfigError
from facegan.faces.flow import flow_at, thin_plate_flow, to_grid_coordinates, warp
from facegan.faces.pose import IBUG_GROUPS
from facegan.methods.base import (EMA, Metric, RequestError, TrainingData, TransformMethod,
                                  Transformed, adam, random_images, unwrap)
from facegan.methods.nets import NORMS, EncoderDecoder, strided_layers, total_variation

LANDMARKS = 68


def aligned_landmarks(reference_shape) -> list[int]:
    """Indices of the landmarks the flow carries onto a's: all but the parts whose shape stays b's."""
    kept = {k for group in reference_shape for k in range(LANDMARKS)[IBUG_GROUPS[group]]}
    aligned = [k for k in range(LANDMARKS) if k not in kept]
    if len(aligned) < 3:
        raise ConfigError(f"train.geogan.reference_shape {list(reference_shape)} leaves the flow {len(aligned)} "
                          "landmarks to align; it needs at least 3 (keep fewer parts)")
    return aligned


def landmark_loss(flow: torch.Tensor, landmarks_a: torch.Tensor, landmarks_b: torch.Tensor) -> torch.Tensor:
    """MSE over k and (x, y) of l_a,k + f(l_a,k) - l_b,k, in grid units (both (N, 68, 2) in [-1, 1]):
    the authors' LandmarkRegLoss before its factor 256."""
    moved = landmarks_a + flow_at(flow, landmarks_a)
    return (moved - landmarks_b.float()).pow(2).mean()


class LandmarkEstimator(nn.Module):
    """x -> its 68 landmarks (N, 68, 2) in grid units: strided convs (instance norm) to 4 x 4, a linear
    layer from zero giving pixel offsets from the training faces' mean shape (a buffer set by `prepare`)."""

    def __init__(self, width: int, size: int):
        super().__init__()
        layers, channels = [], 3
        for i in range(int(round(np.log2(size / 4)))):
            out = width * 2 ** min(i, 3)
            layers += [nn.Conv2d(channels, out, 3, 2, 1), NORMS["instance"](out), nn.LeakyReLU(0.2)]
            channels = out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(channels * 16, 2 * LANDMARKS)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean_shape", torch.zeros(LANDMARKS, 2))
        self.pixel = 2 / size     # the head speaks pixels: in grid units its steps would be size/2 x larger

    def forward(self, x):
        return self.mean_shape + self.pixel * self.head(self.trunk(x)).float().view(-1, LANDMARKS, 2)


class LandmarkFlow(nn.Module):
    """Flow sub-network (ours): one estimator reads a's and b's landmarks; the flow is the thin-plate spline
    that carries each of a's points to b's, so warp(b) puts b's face on a's geometry. The spline is evaluated
    at half resolution and upsampled bilinearly (0.2 px off at the landmarks, 9x cheaper)."""

    def __init__(self, width: int, size: int, max_flow: float, aligned: list[int]):
        super().__init__()
        self.estimator, self.size, self.max_flow = LandmarkEstimator(width, size), size, max_flow
        self.aligned = aligned     # the spline runs through these points; the others keep b's shape

    def forward(self, a, b) -> dict[str, torch.Tensor]:
        points_a, points_b = self.estimator(torch.cat([a, b])).split(len(a))
        spline = F.interpolate(thin_plate_flow(points_a[:, self.aligned], points_b[:, self.aligned], self.size // 2),
                               size=self.size, mode="bilinear", align_corners=False)
        return {"flow": self.max_flow * torch.tanh(spline / self.max_flow), "points_a": points_a,
                "points_b": points_b}


class DenseFlow(nn.Module):
    """Flow sub-network (the paper): an encoder-decoder from (a, b) to the flow; starts at the identity warp."""

    def __init__(self, width: int, depth: int, max_flow: float):
        super().__init__()
        self.net, self.max_flow = EncoderDecoder(6, 2, width, depth, norm="instance"), max_flow
        nn.init.zeros_(self.net.out.weight)
        nn.init.zeros_(self.net.out.bias)

    def forward(self, a, b) -> dict[str, torch.Tensor]:
        return {"flow": self.max_flow * torch.tanh(self.net(torch.cat([a, b], 1)))}


class AttributeTransfer(nn.Module):
    """G(a, b) given the flow: warp, mask and blend a* = m warp(b) + (1 - m) a."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.mask_net = EncoderDecoder(6, 1, width, depth, norm="instance")
        nn.init.zeros_(self.mask_net.out.weight)      # the mask starts at sigmoid(0) = 0.5 (theirs)
        nn.init.zeros_(self.mask_net.out.bias)

    def forward(self, a, b, flow) -> dict[str, torch.Tensor]:
        warped = warp(b, flow)
        mask = torch.sigmoid(self.mask_net(torch.cat([a, warped.to(a.dtype)], 1)))
        blended = mask * warped + (1 - mask) * a
        return {"warped": warped, "mask": mask, "blended": blended}


class Refinement(nn.Module):
    """The refinement sub-network: a_y = clamp(a* + w m 2 tanh(R(a*, a))), an appearance residual inside the
    mask; w is the buffer `weight` (0 until the schedule switches it on, saved with the weights)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.net = EncoderDecoder(6, 3, width, depth, norm="instance")
        nn.init.zeros_(self.net.out.weight)
        nn.init.zeros_(self.net.out.bias)
        self.register_buffer("weight", torch.zeros(()))

    def forward(self, blended, a, mask):
        residual = 2 * torch.tanh(self.net(torch.cat([blended.to(a.dtype), a], 1)))
        return (blended + self.weight * mask * residual).clamp(-1, 1)


class AttributeRemoval(nn.Module):
    """F(b_y) = clamp(b_y + 2 tanh(R(b_y))): b without the attribute (theirs: the same residual form)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.net = EncoderDecoder(3, 3, width, depth, norm="instance")

    def forward(self, b):
        return (b + 2 * torch.tanh(self.net(b))).clamp(-1, 1)


class Discriminator(nn.Module):
    """Strided convs; an LSGAN patch head and a pooled attribute logit (domain classification)."""

    def __init__(self, width: int, size: int):
        super().__init__()
        layers, channels = strided_layers(width, int(round(np.log2(size / 8))), norm_first=False, norm="instance")
        self.trunk = nn.Sequential(*layers)
        self.adv = nn.Conv2d(channels, 1, 3, 1, 1)
        self.cls = nn.Conv2d(channels, 1, 3, 1, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.adv(h), self.cls(h).mean((1, 2, 3))


def lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return (scores.float() - float(real)).pow(2).mean()


def bce(logits: torch.Tensor, present: bool) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(present)))


def mask_sparsity(mask: torch.Tensor, free_area: float) -> torch.Tensor:
    """L_mask: per face relu(mean(m) - free_area), over the batch (ours; theirs: mean(m), free_area 0). The
    attribute's own region (a smile: ~10 % of the crop) costs nothing, so sparsity no longer closes the
    mask on it once L_cls is won; more than that is paid as before."""
    return (mask.float().mean((1, 2, 3)) - free_area).clamp(min=0).mean()


def attribute_head_loss(cls_a, cls_b, cls_outputs=None) -> torch.Tensor:
    """D's domain classification: real a without y, real b with y (StarGAN's, theirs); given G's outputs
    (`d_cls_outputs`, ours) also a_y as without y, so the head shows G a smile only where a real one is:
    trained on real faces alone, it was fooled by faint patterns (L_cls 0.1 with the mask at 0.03)."""
    loss = (bce(cls_a, False) + bce(cls_b, True)) / 2
    return loss if cls_outputs is None else (2 * loss + bce(cls_outputs, False)) / 3


class GeoGAN(TransformMethod):
    name = "geogan"
    flip_augment = False   # the labels are landmark positions
    losses = ("loss_d", "loss_d_cls", "loss_adv", "loss_cls", "loss_rec", "loss_lm", "loss_points", "loss_flow_tv",
              "loss_mask",
              "loss_g")
    headline = (Metric("transfer_success", "higher", "attribute acc.",
                       note="transfer_success: the judge sees the reference's attribute on the output"),
                Metric("identity_acc", "higher", "identity acc. / ceiling (dlib)", "identity_ceiling"),
                Metric("landmark_error_before", "context"), Metric("landmark_error_after_flow", "lower"),
                Metric("fid", "lower", "FID", note="against real test faces with the attribute"),
                Metric("kid", "lower", "KID"))

    def __init__(self, params, common, image_size: int = 64):
        super().__init__(params, common, image_size)
        size = self.size = image_size
        self.attribute = params.attribute   # what it moves from the reference onto the photo
        depth = int(round(np.log2(size / 8)))
        self.aligned = aligned_landmarks(params.reference_shape)
        self.flow = (LandmarkFlow(params.width, size, params.max_flow, self.aligned) if params.flow == "landmarks"
                     else DenseFlow(params.width, depth, params.max_flow))
        self.G = AttributeTransfer(params.width, depth)
        self.refine = Refinement(params.width, depth)
        self.F = AttributeRemoval(params.width, depth)
        self.D = Discriminator(params.d_width, size)
        # G's parts as used: exponential moving averages of the trained ones (ours, `ema_decay` > 0; registered,
        # so saved); with ema_decay 0 the trained parts themselves, and no copies to keep or update
        self.averages = ({name: EMA(getattr(self, name), params.ema_decay) for name in ("flow", "G", "refine")}
                         if params.ema_decay > 0 else {})
        for name, average in self.averages.items():
            setattr(self, f"{name}_ema", average.shadow)

    def trainable(self):
        return {"flow": self.flow, "G": self.G, "refine": self.refine, "F": self.F, "D": self.D}

    def configure_optimizers(self):
        p = self.params
        generators = [q for net in (self.flow, self.G, self.refine, self.F) for q in unwrap(net).parameters()]
        return {"GF": adam(generators, p.lr, (p.beta1, 0.999)),
                "D": adam(unwrap(self.D).parameters(), p.lr, (p.beta1, 0.999))}

    def prepare(self, labels):
        """The landmark estimator starts at the training faces' mean shape (flow "landmarks")."""
        if labels is not None and self.params.flow == "landmarks":
            unwrap(self.flow).estimator.mean_shape.copy_(self.landmarks(labels).mean(0))

    def landmarks(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, 136) pixel landmarks -> (N, 68, 2) normalised."""
        return to_grid_coordinates(flat.float().view(-1, LANDMARKS, 2), self.size)

    def attribute_transfer(self, a, b, averaged: bool = False) -> dict[str, torch.Tensor]:
        """G(a, b_y) = the flow sub-network, then warp, mask, blend and refinement: a_y and every part (with
        `averaged`, by the moving averages of the parts). The refinement runs only while its weight is on
        (a module not called is no parameter DDP waits for)."""
        flow, transfer, refine = self.parts_used() if averaged else (self.flow, self.G, self.refine)
        parts = flow(a, b)
        parts |= transfer(a, b, parts["flow"])
        if float(unwrap(refine).weight) > 0:
            parts["output"] = refine(parts["blended"], a, parts["mask"])
        else:
            parts["output"] = parts["blended"].clamp(-1, 1)
        return parts

    def parts_used(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(flow, G, refine) as inference uses them: the moving averages when kept, else the trained parts."""
        return tuple(self.averages[name].shadow if self.averages else getattr(self, name)
                     for name in ("flow", "G", "refine"))

    def after_step(self, step):
        for name, average in self.averages.items():
            average.update(unwrap(getattr(self, name)), step)

    def steady_step(self) -> int:
        return self.params.warmup + self.params.refine_start

    def train_step(self, batch, step, generator):
        p, opt = self.params, self.optimizers
        unwrap(self.refine).weight.fill_(p.refine_weight if step >= self.steady_step() else 0.0)
        a, b = batch["image"], batch["ref_image"]
        land_a, land_b = self.landmarks(batch["attributes"]), self.landmarks(batch["ref_attributes"])
        if step < p.warmup:
            return self.warmup_step(a, b, land_a, land_b)

        # ---------------- D: real a (no y) and b (y) vs a_y and b_ybar; learns y on the real ones
        with torch.no_grad():
            a_y, b_ybar = self.attribute_transfer(a, b)["output"], self.F(b)
        adv_real_a, cls_a = self.D(a)
        adv_real_b, cls_b = self.D(b)
        adv_fake_a, cls_fake_a = self.D(a_y)
        adv_fake_b, _ = self.D(b_ybar)
        loss_d_adv = (lsgan(adv_real_a, True) + lsgan(adv_real_b, True) + lsgan(adv_fake_a, False)
                      + lsgan(adv_fake_b, False)) / 2
        loss_d_cls = attribute_head_loss(cls_a, cls_b, cls_fake_a if p.d_cls_outputs else None)
        loss_d = loss_d_adv + loss_d_cls        # D's own classification at weight 1 (StarGAN's convention)
        opt["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["D"].step()

        # ---------------- G and F
        transfer = self.attribute_transfer(a, b)
        a_y, b_ybar = transfer["output"], self.F(b)
        adv_a, cls_ay = self.D(a_y)
        adv_b, cls_bybar = self.D(b_ybar)
        loss_adv = lsgan(adv_a, True) + lsgan(adv_b, True)
        loss_cls = bce(cls_ay, True) + bce(cls_bybar, False)
        back = self.attribute_transfer(b_ybar, a_y)["output"]             # the attribute moved back onto b's geometry
        loss_rec = F.l1_loss(self.F(a_y).float(), a.float()) + F.l1_loss(back.float(), b.float())
        loss_lm = landmark_loss(transfer["flow"], land_a[:, self.aligned], land_b[:, self.aligned])
        loss_points = self.points_loss(transfer, land_a, land_b)
        loss_flow_tv = total_variation(transfer["flow"] * (self.size / 2))   # in pixels
        loss_mask = mask_sparsity(transfer["mask"], p.mask_free_area)
        loss_g = (loss_adv + p.lambda_cls * loss_cls + p.lambda_rec * loss_rec + p.lambda_lm * loss_lm
                  + p.lambda_points * loss_points + p.lambda_flow_tv * loss_flow_tv + p.lambda_mask * loss_mask)
        opt["GF"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["GF"].step()
        return {"loss_d": loss_d.item(), "loss_d_cls": loss_d_cls.item(), "loss_adv": loss_adv.item(),
                "loss_cls": loss_cls.item(), "loss_rec": loss_rec.item(), "loss_lm": loss_lm.item(),
                "loss_points": loss_points.item(),
                "loss_flow_tv": loss_flow_tv.item(), "loss_mask": loss_mask.item(), "loss_g": loss_g.item()}

    def points_loss(self, parts: dict, land_a: torch.Tensor, land_b: torch.Tensor) -> torch.Tensor:
        """MSE of the landmark estimator's points to a's and b's own (grid units); 0 for the dense flow."""
        if "points_a" not in parts:
            return torch.zeros((), device=land_a.device)
        return ((parts["points_a"] - land_a).pow(2).mean() + (parts["points_b"] - land_b).pow(2).mean()) / 2

    def warmup_step(self, a, b, land_a, land_b) -> dict[str, float]:
        """Before the game, the two parts with real labels learn alone: D's attribute head on real a (without
        y) and b (with y), so G's L_cls has a critic from its first step; and with flow "landmarks" the
        estimator (L_lm + L_points + L_tv). The other losses are not computed (NaN)."""
        p, opt = self.params, self.optimizers
        adv_a, cls_a = self.D(a)
        adv_b, cls_b = self.D(b)
        loss_d_cls = attribute_head_loss(cls_a, cls_b)
        opt["D"].zero_grad(set_to_none=True)
        (loss_d_cls + 0 * (adv_a.mean() + adv_b.mean())).backward()   # DDP: every parameter in the graph
        opt["D"].step()
        losses = {name: float("nan") for name in self.losses} | {"loss_d_cls": loss_d_cls.item()}
        if p.flow == "landmarks":
            parts = self.flow(a, b)
            loss_lm = landmark_loss(parts["flow"], land_a[:, self.aligned], land_b[:, self.aligned])
            loss_points = self.points_loss(parts, land_a, land_b)
            loss_flow_tv = total_variation(parts["flow"] * (self.size / 2))
            opt["GF"].zero_grad(set_to_none=True)
            (p.lambda_lm * loss_lm + p.lambda_points * loss_points + p.lambda_flow_tv * loss_flow_tv).backward()
            opt["GF"].step()
            losses |= {"loss_lm": loss_lm.item(), "loss_points": loss_points.item(),
                       "loss_flow_tv": loss_flow_tv.item()}
        return losses

    def progress_probe(self, root, labels, n):
        """Transfer success on n fixed test pairs (a without the attribute, a reference b with it): how
        often the attribute classifier sees the attribute on G(a, b_y), as evaluate measures it."""
        from facegan.data.datasets import celeba_attributes, to_tensor
        from facegan.metrics import attributes

        judge = attributes.load(Path(root) / "models" / "attr_classifier")
        images, values, _ = celeba_attributes(root, [self.attribute], "test")
        rng = np.random.default_rng(self.common.seed)
        present = values[:, 0] == 1
        a_rows = rng.permutation(np.flatnonzero(~present))[:n]
        b_rows = rng.choice(np.flatnonzero(present), size=len(a_rows))
        a, b, column = to_tensor(images[a_rows]), to_tensor(images[b_rows]), judge.column(self.attribute)

        def transfer_success() -> dict[str, float]:
            device = self.device()
            outputs = torch.cat([self.transfer(x.to(device), y.to(device))["output"].cpu()
                                 for x, y in zip(a.split(64), b.split(64))])
            return {f"transfer_success_{len(a_rows)}": float((judge.predict(outputs)[:, column] >= 0.5).mean())}
        return transfer_success

    # ---------------------------------------------------------------- use
    @torch.no_grad()
    def transfer(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        """G(a, b_y) and its parts by the moving averages of G's parts (always in eval mode)."""
        return {k: v.float() for k, v in self.attribute_transfer(a, b, averaged=True).items()}

    def transform(self, crops, reference: torch.Tensor | None = None) -> Transformed:
        """a_y = G(a, b_y) for each crop a and the reference crop(s) b_y ((1 or N), 3, S, S) that have the
        attribute. Panels: the reference, warp(b) and the mask (as an image in [-1, 1])."""
        if reference is None:
            raise RequestError(f"geogan moves {self.attribute} from a reference face: give one")
        device = self.device()
        a = crops.to(device)
        b = reference.to(device).expand(len(a), -1, -1, -1)
        parts = self.transfer(a, b)
        notes = [f"{self.attribute} of the reference moved onto the photo" for _ in range(len(a))]
        return Transformed(parts["output"].cpu(), {"reference": b.float().cpu(), "warped reference": parts["warped"].cpu(),
                                                   "mask": parts["mask"].expand(-1, 3, -1, -1).cpu() * 2 - 1}, notes)

    def sample_grid(self, generator):
        """Rows of 8: a, b_y, warp(b), mask, a_y, F(b_y)."""
        if self.examples is None:
            raise RuntimeError("geogan.sample_grid needs example images (start_training sets them)")
        a, b = self.examples["image"][:8], self.examples["ref_image"][:8]
        parts = self.transfer(a, b)
        training = self.F.training
        with torch.no_grad():
            removed = self.F.eval()(b).float()
        self.F.train(training)
        return torch.cat([a.float(), b.float(), parts["warped"], parts["mask"].expand(-1, 3, -1, -1) * 2 - 1,
                          parts["output"], removed])

    @staticmethod
    def training_data(root, params) -> TrainingData:
        """A: aligned CelebA train faces without the attribute, B: with it; labels: 68 landmarks (136)."""
        from facegan.data.datasets import faces_with_landmarks

        faces, landmarks, frame = faces_with_landmarks(root, "train")
        present = frame[params.attribute].to_numpy() == 1
        flat = landmarks.reshape(len(landmarks), -1)
        return TrainingData(faces[~present], flat[~present], {"ref": TrainingData(faces[present], flat[present])})

    @staticmethod
    def synthetic_data(params, n, image_size, seed=0) -> TrainingData:
        """A and the references B, each with 68 landmarks (flattened) near one random face shape."""
        rng = np.random.default_rng(seed)

        def landmarks(m):
            scale = image_size / 64
            return ((rng.uniform(12, 52, (1, 136)) + rng.normal(0, 1.5, (m, 136))) * scale).astype(np.float32)

        return TrainingData(random_images(rng, n, image_size), landmarks(n),
                            {"ref": TrainingData(random_images(rng, n, image_size), landmarks(n))})

    def evaluate(self, context) -> dict:
        """Transfer success, identity, landmark alignment, FID, London ground truth (metrics/transfer.py)."""
        from facegan.metrics.transfer import evaluate_transfer

        return evaluate_transfer(self.transfer, self.attribute, context)
