"""GeoGAN (Yin, Liu & Loy, AAAI 2019, arXiv 1811.12670): instance-level attribute transfer.

Give face a (without the attribute y) the attribute that reference face b_y
has, unpaired, with b's attribute moved onto a's geometry. Data: aligned
CelebA train faces with their 68 landmarks (stage `align`); A = faces without
`attribute` (default Smiling), B = faces with it.

Attribute transfer module G(a, b_y):
- flow sub-network: from (a, b_y) a dense flow f (2 channels, in the
  normalised coordinates of `grid_sample`) that warps b to a's geometry:
  warp(b)(p) = b(p + f(p)) by a differentiable bilinear sampler (Spatial
  Transformer Networks, Jaderberg et al. 2015);
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
  L_tv = TV of the flow in pixels keeps it smooth;
- L_mask = mean(m): sparsity, only the attribute's region is pasted.
L_G = L_adv + lambda_cls L_cls + lambda_rec L_rec + lambda_lm L_lm + lambda_flow_tv L_tv + lambda_mask L_mask.

Weights: the authors' released training script and code (wdyin/GeoGAN
`scripts/train.sh`, `networks.py`, `faceAnaModel.py`), each beside ours:
lambda_cls 0.2 (theirs 0.2); lambda_rec 5 (their lambda_gan_feat 5, L1 on
pixels; they add VGG-face features we do not have); lambda_lm 2560 (their
LandmarkRegLoss 256 x MSE in grid units, weighted 10); lambda_flow_tv 1 on the
flow in pixels (their lambda_flow_reg 1 on flow x img_size); lambda_mask 0.1
(theirs 0.1). Until issue 20 we weighted the landmark term 1 (about 1000 x
weaker than theirs): warp(b) stayed grotesque and the mask closed.

Initialisation and schedule (theirs): the mask starts near 0.5 (zero output
layer, sigmoid(0)); the refinement residual is scaled by the mask and
refine_weight 0.1 and switched on late (theirs after 10 of 100 epochs; ours
after `refine_start` steps), so early training must move the attribute by the
warp and the mask, not paint it. The flow starts at zero (identity warp; theirs:
random init divided by 10) and is bounded by max_flow tanh (ours).

Normalisation: instance norm in every network, as theirs. D scores a, b, a_y
and F(b) as separate batches of one class each; with batch norm the per-batch
statistics erased the very difference its attribute head must learn
(loss_d_cls stayed at ln 2 for a whole run).

Departures: 64 x 64 aligned crops (the paper: 128-256); plain conv
encoder-decoders with skips instead of their residual generators; one D
(patch LSGAN head and a pooled attribute head) instead of a multi-scale one;
D's own classification weighted 1 (StarGAN's convention; theirs lambda_cls);
no VGG-face perceptual term.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegan.faces.flow import flow_at, to_grid_coordinates, warp
from facegan.methods.base import (Metric, RequestError, TrainingData, TransformMethod,
                                  Transformed, random_images, unwrap)
from facegan.methods.nets import EncoderDecoder, strided_layers, total_variation

LANDMARKS = 68


def landmark_loss(flow: torch.Tensor, landmarks_a: torch.Tensor, landmarks_b: torch.Tensor) -> torch.Tensor:
    """MSE over k and (x, y) of l_a,k + f(l_a,k) - l_b,k, in grid units (both (N, 68, 2) in [-1, 1]):
    the authors' LandmarkRegLoss before its factor 256."""
    moved = landmarks_a + flow_at(flow, landmarks_a)
    return (moved - landmarks_b.float()).pow(2).mean()


class AttributeTransfer(nn.Module):
    """G(a, b): flow, mask, blend, refinement -> a_y and its parts."""

    def __init__(self, width: int, depth: int, max_flow: float):
        super().__init__()
        self.flow_net = EncoderDecoder(6, 2, width, depth, norm="instance")
        self.mask_net = EncoderDecoder(6, 1, width, depth, norm="instance")
        self.refine = EncoderDecoder(6, 3, width, depth, norm="instance")
        self.max_flow = max_flow
        # the refinement's scale: 0 until the schedule switches it on (saved with the weights)
        self.register_buffer("refine_weight", torch.zeros(()))
        # identity warp, the mask at sigmoid(0) = 0.5 (theirs), no residual yet
        for net in (self.flow_net, self.mask_net, self.refine):
            nn.init.zeros_(net.out.weight)
            nn.init.zeros_(net.out.bias)

    def forward(self, a, b) -> dict[str, torch.Tensor]:
        flow = self.max_flow * torch.tanh(self.flow_net(torch.cat([a, b], 1)))
        warped = warp(b, flow)
        mask = torch.sigmoid(self.mask_net(torch.cat([a, warped.to(a.dtype)], 1)))
        blended = mask * warped + (1 - mask) * a
        residual = 2 * torch.tanh(self.refine(torch.cat([blended.to(a.dtype), a], 1)))
        output = (blended + self.refine_weight * mask * residual).clamp(-1, 1)
        return {"output": output, "flow": flow, "warped": warped, "mask": mask, "blended": blended}


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


class GeoGAN(TransformMethod):
    name = "geogan"
    flip_augment = False   # the labels are landmark positions
    losses = ("loss_d", "loss_d_cls", "loss_adv", "loss_cls", "loss_rec", "loss_lm", "loss_flow_tv", "loss_mask",
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
        self.G = AttributeTransfer(params.width, depth, params.max_flow)
        self.F = AttributeRemoval(params.width, depth)
        self.D = Discriminator(params.d_width, size)

    def trainable(self):
        return {"G": self.G, "F": self.F, "D": self.D}

    def configure_optimizers(self):
        p = self.params
        generators = list(unwrap(self.G).parameters()) + list(unwrap(self.F).parameters())
        return {"GF": torch.optim.Adam(generators, p.lr, betas=(p.beta1, 0.999)),
                "D": torch.optim.Adam(unwrap(self.D).parameters(), p.lr, betas=(p.beta1, 0.999))}

    def landmarks(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, 136) pixel landmarks -> (N, 68, 2) normalised."""
        return to_grid_coordinates(flat.float().view(-1, LANDMARKS, 2), self.size)

    def train_step(self, batch, step, generator):
        p, opt = self.params, self.optimizers
        unwrap(self.G).refine_weight.fill_(p.refine_weight if step >= p.refine_start else 0.0)
        a, b = batch["image"], batch["ref_image"]
        land_a, land_b = self.landmarks(batch["attributes"]), self.landmarks(batch["ref_attributes"])

        # ---------------- D: real a (no y) and b (y) vs a_y and b_ybar; learns y on the real ones
        with torch.no_grad():
            a_y, b_ybar = self.G(a, b)["output"], self.F(b)
        adv_real_a, cls_a = self.D(a)
        adv_real_b, cls_b = self.D(b)
        adv_fake_a, _ = self.D(a_y)
        adv_fake_b, _ = self.D(b_ybar)
        loss_d_adv = (lsgan(adv_real_a, True) + lsgan(adv_real_b, True) + lsgan(adv_fake_a, False)
                      + lsgan(adv_fake_b, False)) / 2
        loss_d_cls = (bce(cls_a, False) + bce(cls_b, True)) / 2
        loss_d = loss_d_adv + loss_d_cls        # D's own classification at weight 1 (StarGAN's convention)
        opt["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["D"].step()

        # ---------------- G and F
        transfer = self.G(a, b)
        a_y, b_ybar = transfer["output"], self.F(b)
        adv_a, cls_ay = self.D(a_y)
        adv_b, cls_bybar = self.D(b_ybar)
        loss_adv = lsgan(adv_a, True) + lsgan(adv_b, True)
        loss_cls = bce(cls_ay, True) + bce(cls_bybar, False)
        back = self.G(b_ybar, a_y)["output"]               # the attribute moved back onto b's geometry
        loss_rec = F.l1_loss(self.F(a_y).float(), a.float()) + F.l1_loss(back.float(), b.float())
        loss_lm = landmark_loss(transfer["flow"], land_a, land_b)
        loss_flow_tv = total_variation(transfer["flow"] * (self.size / 2))   # in pixels
        loss_mask = transfer["mask"].float().mean()
        loss_g = (loss_adv + p.lambda_cls * loss_cls + p.lambda_rec * loss_rec + p.lambda_lm * loss_lm
                  + p.lambda_flow_tv * loss_flow_tv + p.lambda_mask * loss_mask)
        opt["GF"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["GF"].step()
        return {"loss_d": loss_d.item(), "loss_d_cls": loss_d_cls.item(), "loss_adv": loss_adv.item(),
                "loss_cls": loss_cls.item(), "loss_rec": loss_rec.item(), "loss_lm": loss_lm.item(),
                "loss_flow_tv": loss_flow_tv.item(), "loss_mask": loss_mask.item(), "loss_g": loss_g.item()}

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
            self.G.train()
            return {f"transfer_success_{len(a_rows)}": float((judge.predict(outputs)[:, column] >= 0.5).mean())}
        return transfer_success

    # ---------------------------------------------------------------- use
    @torch.no_grad()
    def transfer(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        """G(a, b_y) and its parts, in eval mode."""
        return {k: v.float() for k, v in self.G.eval()(a, b).items()}

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
        with torch.no_grad():
            removed = self.F.eval()(b).float()
        self.G.train()
        self.F.train()
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
