"""Domain Transfer Network (Taigman, Polyak & Wolf 2017, arXiv 1611.02200): face photo -> avatar.

G = g o f with f FIXED: f is the converted FaceNet (the paper: DeepFace's 256-d
layer) of the 64 x 64 crop; g maps it to a 64 x 64 image. Unpaired S (aligned
CelebA faces) and T (rendered avatars, or the Noto emoji faces with `target: emoji`).

g (`g_kind`): by default (`parts`, ours) g = R o h, h an MLP that chooses each
avatar part and R a fixed, differentiable renderer of python-avatars' parts
(PartsGenerator below); `decoder` is the paper's deconvolutional g, which the
rest of this docstring describes as it was tuned. Two terms of ours train h
in part space beside the paper's losses (which all stay): L_TID in part space
(`tid_parts`: h's cross-entropy on t's own parts, which the avatars' manifest
records) and L_CONST by assignment (`const_parts`: on the parts of the
training avatars nearest the face in L_CONST's own centred measure; see
const_parts_loss). Through the hard part choices the pixel gradients of L_TID
and L_CONST are poor guides (L_TID stuck at ~0.22 after 300 warm-up steps).
What a 3-minute CPU run reaches with the parts generator (evaluate@dtn; FID vs
test avatars / retrieval rank-1 among 100, plain and perturbed / hair
light-dark, glasses agreement / TV ratio):
- pixel terms only (tid_parts, const_parts 0): 64.5 / 0.04, 0.04 / 0.62, 0.51 / 0.93:
  avatars, but not the person's; gumbel choices 67.8 / 0.06, 0.06 / 0.60, 0.62;
  alpha 100: 65.1 / 0.05, 0.05 / 0.52, 0.57;
- tid_parts 1: 70.7 / 0.05, 0.06 / 0.65, 0.55; with const_parts 1: 68.1 /
  0.06, 0.05 / 0.55, 0.52 (both weights too small beside beta L_TID: h's
  cross-entropies barely fell);
- tid_parts, const_parts 20: 57.3 / 0.16, 0.12 / 0.66, 0.66; alpha 0:
  60.4 / 0.15, 0.16 / 0.70, 0.72; **50 (the default): 46.3 / 0.20, 0.16 /
  0.72, 0.72 / 0.92**.
The decoder's best (below): 236 / 0.09, 0.09 / 0.67, - / 0.71. Ceilings: the
nearest of the 1,400 training avatars in centred embedding scores retrieval
0.33 (0.25 among 300 of them, 0.16 among 100: more rendered avatars would
give L_CONST by assignment better targets); an MLP trained offline on the
assignment alone reaches 0.17-0.19 on test faces.
What the PERTURBED retrieval (the must-hold figure) allows (issue 21, 990 test
faces, FaceNet embedding): the nearest-avatar vote (each part the weighted vote
of the 10 nearest bank avatars) over 9,400 avatars (the training ones and more
drawn by R) scores 0.44 plain but 0.25 perturbed when the bank is read plain;
read through J (f(J(avatar)), as L_CONST reads G(s)), 0.33 and 0.33. So an
avatar carries ~0.3 through the perturbation at best, and only with a bank far
larger than the training avatars. `assign_bank` builds such a bank and
`assign_steps` distils its vote into h before the game (with synthetic faces,
`assign_synthetic`), but h does not learn it from f (see assign_step): off by
default.

Which of FaceNet's layers (ours, `f_layer`, `const_layer`): g reads the 1792-d
pool, L_CONST keeps the 512-d identity embedding (the paper: one layer for
both). The embedding is trained to forget what is not identity, and on avatars
it forgets their looks: a ridge regression from f(t) to the pixels of held-out
avatars (1,400 train, 500 test) reaches MSE 0.17 from the embedding and 0.069
from the pool, against 0.25 for the mean avatar. From the embedding g could
only draw a blurred mean avatar (L_TID stuck near 0.15-0.2), which D tells from
real ones at once. Keeping the pool in L_CONST instead ties G(s) to the photo's
lighting and pose rather than its identity (on 8 photos after a short game:
identity cos 0.77 for the right photo vs 0.74 for another).

Networks (the paper's Section 5, face -> emoji):
- g (`g_kind: decoder`): 5 blocks, each an upscaling (transposed) convolution + BatchNorm + ReLU,
  the first four followed by a 1 x 1 convolution + BN + ReLU ("adding 1 x 1
  convolution to each block ... made g 9-layers deep"): 1 x 1 -> 4 -> 8 -> 16
  -> 32 -> 64, tanh out.
- D: blocks of convolution stride 2 + BatchNorm + LeakyReLU 0.2 (the paper:
  6 blocks on 152 x 152; here 4 on 64 x 64), then a 4 x 4 convolution to 3
  logits: D1 = "G(s)", D2 = "G(t)", D3 = "a real t" (the ternary D).

Losses (each a mean over the batch):
    L_D     = -E_s log D1(g(f(s))) - E_t log D2(g(f(t))) - E_t log D3(t)
    L_GANG  = -E_s log D3(g(f(s))) - E_t log D3(g(f(t)))
    L_CONST = 1 - cos(f'(s) - m_S, f'(J(g(f(s)))) - m_T)   (f-constancy, f' = FaceNet at const_layer)
    L_TID   = d2(t, g(f(t)))                      (G is the identity on T)
    L_TV    = per image, the SUM over pixels and channels of sqrt(dx^2 + dy^2)   (Eq. 7, B = 1; G(s), G(t))
    L_G     = L_GANG + alpha_k L_CONST + beta L_TID + gamma L_TV
d2 is the pixel MSE on [-1, 1]. Each departure from the paper, with its reason:
- L_CONST: the paper's d is an MSE on DeepFace's 256-d layer, a scale FaceNet's
  unit embedding does not share; 1 - cos is half the squared distance of unit
  vectors. J (ours, `const_shift`, `const_blur`): f reads G(s) shifted by a
  random whole number of pixels and blurred, so pixel-exact high frequencies
  that only f reads stop paying (the noise the paper reports at large alpha,
  and what an earlier version of ours drew: f-constancy won by colour noise).
- m_S, m_T (ours, `const_centred`): the mean f' of each domain's training
  images (running means over the batches). Avatars and photos occupy different
  regions of FaceNet's space, so the uncentred loss asks G(s) to have a photo's
  embedding, which D forbids; centred, it asks G(s) to sit among avatars where
  s sits among photos. (Matching each test photo to the training avatar
  nearest in centred embedding gives retrieval rank-1 0.33 among 100: about
  what an avatar that carries the person can score.)
- alpha_k (ours, `alpha_ramp`): alpha rises linearly from 0 over the first game
  steps, so D first pulls G(s) into the avatars' domain before f pulls on it;
  while it is 0 no f pass is made.
- L_TV sums over pixels as Eq. 7 does (an earlier version of ours averaged,
  ~12,000 x weaker: TV was off). gamma 0.001, not the paper's 0.05: at beta 100
  on [-1, 1] pixels a summed TV weighted 0.05 outweighs L_TID and g draws flat
  discs (on 8 avatars: TV 10 % of theirs, L_TID stuck at 0.52); at 0.001 g
  learns them (L_TID 0.02) with TV 1.1 x theirs.
- const_faces (ours): f reads 8 faces of each batch; FaceNet's backward at 160
  px is most of a step, and with 8 a game step takes ~0.5 s instead of ~3.5 s.
- beta = 100, not the paper's 1: the paper does not give its pixel range, and on
  [-1, 1] pixels an MSE weighted 1 is so small beside L_GANG (a cross-entropy
  of 5-15) that the first 20 adversarial steps undo what the warm-up taught g
  (L_TID 0.15 -> 0.6 at any alpha); with 100, G(t) stays the avatar.
One D step, then `g_steps` g steps on the same batch (the paper does not say;
yunjey/dtn-tensorflow, a public re-implementation, takes 6 on S), Adam(lr, (beta1, 0.999)); g(f(s)) and g(f(t)) go through
g in one batch (see generate_both), D sees G(s), G(t) and t in one batch.

Warm-up (`tid_warmup` steps, our addition): g alone learns beta L_TID + gamma
L_TV, f(t) -> t, with no D and no f pass (~0.1 s a step); the game
then starts with a fresh Adam for g. In a minutes-long CPU budget this gives
g a decoder of f's space before D and L_CONST pull on it.

f(s) and f(t) of the training images come from the feature cache (stage
`features`, bf16 where the CPU has it, as the loop's autocast computes f(G(s))):
f is fixed, so they never change, and it saves a FaceNet pass per step; f(G(s))
is computed, and differentiated through, at every step. No random flips: the
cache holds f of the images as they are, and a flipped s with the unflipped
f(s) would give g one input and two targets (the flip mismatch of an earlier
version). Caching the mirror images (`features.mirrored: [celeba, avatars]`)
gives the flips back at twice the stage's cost.

g's input (ours, `f_components`): f standardised per domain, projected on
the top 64 principal axes of T's standardised f (fitted once from the
training avatars, saved with g), standardised again per domain. The 1,400
avatars span only part of the pool's 1,792 dimensions: their top 64 axes hold
71 % of the avatars' variance but 37 % of the photos'. The rest of f(s) lies
where g's first layer never saw a target and still acts with its random
initial weights. (The paper's f is 256-d.)

Departures: FaceNet (1792-d pool, 512-d unit embedding) for DeepFace (256-d);
64 x 64 for D's 152 x 152 input, so 4 D blocks; g_width 32 (256 channels at
4 x 4; 64 took 4 x the compute a step); g's x2 upscaling (`g_upsample`) is
nearest-neighbour resizing + a 3 x 3 convolution (the paper: "upscaling
convolution", unspecified; the 4 x 4 transposed one drew a checkerboard that
D reads); f standardised per domain before g (`f_standardise`, see
EmbeddingGenerator); the warm-up; lr 1e-3; rendered avatars (python-avatars)
for the paper's artist-drawn emoji set.

What a 3-minute CPU run reaches (issue 21, evaluate@dtn on 990 test faces;
FID vs test avatars / TV of G(s) over the avatars' / retrieval rank-1 among 100,
plain and perturbed / hair light-dark agreement). With g reading the 512-d
embedding:
- before these fixes: 344 / - / 0.01 (chance) / -: colour noise, and the
  game never started (192 of its 300 warm-up steps at g_width 64);
- lr 5e-4, 100 warm-up steps, alpha 10: 413 / 2.0 / 0.09, 0.06 / 0.53;
  alpha 30: 395 / 2.1 / 0.39, 0.22 / 0.53;
- lr 1e-3, 300 warm-up steps, alpha 10: 366 / 1.6 / 0.07, 0.05 / 0.69;
  alpha 30: 362 / 1.8 / 0.16, 0.15 / 0.64 (G(s) a brown face-like texture;
  L_TID on test avatars ~0.21: G(t) a blurred mean avatar).
With g reading the pool (L_TID at the end of the warm-up 0.085 instead of 0.15):
- transposed upscaling: 373 / 1.5 / 0.32, 0.32 / 0.50; g_steps 3 (one D step,
  three g steps): 372 / 1.5 / 0.03, 0.05 / 0.62 (every face drawn alike);
  const_layer pool: 369 / 1.8 / 0.11, 0.11 / 0.63; 600 warm-up steps:
  386 / 1.7 / 0.14, 0.15 / 0.57;
- f standardised: 359 / 1.3 / 0.13, 0.13 / 0.63 (warm-up L_TID 0.065);
  with 600 warm-up steps 385 / 1.8 / 0.10, 0.12 / 0.76;
- resize upscaling: 258 / 0.89 / 0.05, 0.06 / 0.53; with f standardised:
  245 / 0.75 / 0.07, 0.08 / 0.55.
g's first layer as a matmul (ProjectTo4x4): a game step 0.66 -> 0.54 s, a
warm-up step 0.22 -> 0.14 s (the rest of a game step is g's and D's
convolutions, not f: FaceNet's forward and backward on 8 faces take ~0.17 s).
Then (~250 game steps):
- warm-up only, no game (1,350 steps): 216 / 0.75 / 0.03, 0.03 / 0.71: the
  decoder alone carries hair colour (a linear reader fit on the avatars'
  standardised pool reads the photos' hair at 0.71, glasses at 0.76) but
  draws blurred mixtures and no identity;
- L_CONST centred: 258 / 0.78 / 0.07, 0.06 / 0.53; with f_components 128:
  253 / 0.58 / 0.06, 0.06 / 0.53 (warm-up only: 210 / 0.67 / 0.03, 0.04 / 0.64);
  32: 275 / 0.68 / 0.05, 0.06 / 0.58; **64 (the default): 236 / 0.71 / 0.09,
  0.09 / 0.67**; with d_lr 2e-4: 269 / 0.93 / 0.07, 0.05 / 0.67; batch 16
  (more steps): 259 / 0.69 / 0.13, 0.11 / 0.53; alpha 0: 267 / 0.83 / 0.02,
  0.02 / 0.61 (no better FID without L_CONST: the game is too short, not
  pulled apart by f).
Throughout, D wins the game at once (L_GANG 11-15) and the game undoes part
of the warm-up (L_TID 0.08 -> 0.15). The default draws smooth, blurred heads
in the avatars' colours on a white ground, but does not carry the person
yet. Runs of one recipe differ by +-0.15 in retrieval. The must-hold
figures (FID <= 150, perturbed retrieval >= 0.3, hair agreement >= 0.65)
are not reached together in 3 minutes; what an avatar can carry is about
0.3: the training avatar nearest each test photo in centred embedding
scores 0.33.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from facegan.data.avatars import CHOSEN_PARTS, part_options, sample_part_indices
from facegan.methods.base import (Metric, TrainingData, TransformMethod, Transformed,
                                  adam, random_images, random_unit, unwrap)
from facegan.methods.nets import shift_and_blur, strided_layers, total_variation
from facegan.pretrained.facenet import load_converted as load_fixed_f
from facegan.devices import inference_autocast as autocast_like_training

# ================================================================ g_kind: parts
# DTN's parts generator (ours, `train.dtn.g_kind: parts`): g = R o h.
#
# h, a small MLP, reads f and chooses one option of each avatar part (skin,
# clothing and its colour, mouth, nose, eyes, eyebrows, top, hair and hat colour,
# facial hair and its colour, accessory: python-avatars' own lists); R, fixed,
# composites the chosen parts' layers (rasterised once by `render_avatars`,
# data/avatars.py) in python-avatars' painting order, "over" on white:
#
#     out = rgb_k + (1 - a_k) out,   k = body, clothing, mouth, nose, eyes, eyebrows, top, facial hair, accessory
#
# on premultiplied RGBA layers. A choice is a probability vector over a part's
# options and a layer the probability-weighted sum of its options' layers, so R
# is differentiable in the choices; a top's layer depends on the hair colour (a
# hair top) or the hat colour (a hat), facial hair on its colour, and a top
# without a facial-hair (accessory) slot draws none.
#
# The paper's g is a deconvolutional decoder from f. Ours draws from the target
# domain's own renderer instead, as Shi et al. 2019 (face-to-parameter translation
# for game characters) do with a learned imitator of a game engine: here the SVG
# layers composite exactly, so no imitator is needed. Why: in a CPU budget of
# minutes the decoder never learned to draw avatars from f, not even f(t) -> t
# (L_TID stuck at ~0.2, blurred heads, FID ~240; the recipes in dtn.py); its
# outputs were blurred mixtures D told apart at once. Every output of R is an
# avatar, so the game is about WHICH avatar: D matches the choices to the
# avatars', L_CONST ties them to the person. The rest of DTN (f fixed, the ternary
# D, L_CONST, L_TID in pixels, L_TV) is unchanged.
#
# Choices in training (`choice`): straight-through (Bengio et al. 2013): the
# forward pass takes each part's most probable option (R draws one avatar), the
# backward pass the softmax's gradient; `gumbel`: the same with Gumbel noise on
# the logits (Jang et al. 2017), exploring options h does not yet prefer;
# `soft`: the softmax itself (blended layers). In use, the most probable option.

# each layer array and the parts whose options index it, in order
LAYER_AXES = {
    "skin_color": ("skin_color",), "clothing": ("clothing", "clothing_color"), "mouth": ("mouth",),
    "nose": ("nose",), "eyes": ("eyes",), "eyebrows": ("eyebrows",), "top_hair": ("top", "hair_color"),
    "top_hat": ("top", "hat_color"), "facial_hair": ("facial_hair", "facial_hair_color"),
    "accessory": ("accessory",)}
# python-avatars' painting order (data/avatars.LAYER_GROUPS); "top" is top_hair + top_hat
PAINT_ORDER = ("skin_color", "clothing", "mouth", "nose", "eyes", "eyebrows", "top", "facial_hair", "accessory")
TOP_FLAGS = ("top_is_hair", "top_has_facial_hair", "top_has_accessory")
CHOICES = ("straight_through", "gumbel", "soft")


def option_counts() -> dict[str, int]:
    """Each chosen part's number of options (python-avatars' enums, the order of the layers)."""
    return {name: len(options) for name, options in part_options().items()}


class LayeredAvatarRenderer(nn.Module):
    """R: {part: (N, options) choice} -> (N, 3, size, size) in [-1, 1]. The layers are uint8 buffers (saved
    with g, ~17 MB at 64 px), filled by load_layers from render_avatars' layers.npz."""

    def __init__(self, size: int):
        super().__init__()
        self.size, self.counts = size, option_counts()
        # each array flat, (option combinations, 4 * size * size): 2-d, so no memory format touches it
        self.shapes = {name: (*(self.counts[a] for a in axes), 4, size, size) for name, axes in LAYER_AXES.items()}
        for name, shape in self.shapes.items():
            self.register_buffer(name, torch.zeros(int(np.prod(shape[:-3])), 4 * size * size, dtype=torch.uint8))
        for name in TOP_FLAGS:
            self.register_buffer(name, torch.zeros(self.counts["top"]))
        self.register_buffer("layers_loaded", torch.zeros((), dtype=torch.bool))
        self._float_cache: dict[str, tuple[tuple, torch.Tensor]] = {}

    @torch.no_grad()
    def load_layers(self, arrays: dict[str, np.ndarray]) -> None:
        """The layers of data/avatars/layers.npz (render_layers), checked against python-avatars' lists."""
        for name in (*LAYER_AXES, *TOP_FLAGS):
            if name not in arrays:
                raise KeyError(f"avatar layers lack {name!r}: re-run `dvc repro render_avatars`")
            buffer = getattr(self, name)
            expected = self.shapes.get(name, tuple(buffer.shape))
            if tuple(arrays[name].shape) != expected:
                raise ValueError(f"avatar layers {name!r} have shape {tuple(arrays[name].shape)}, the renderer "
                                 f"expects {expected} (python-avatars' lists at {self.size} px): "
                                 "re-run `dvc repro render_avatars` with render_avatars.size = align.size")
            buffer.copy_(torch.as_tensor(np.asarray(arrays[name])).reshape(buffer.shape).to(buffer.dtype))
        self.layers_loaded.fill_(True)

    def flat_layers(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer array `name` as float in [0, 1]: colour (options, 3 * size * size) and alpha (options,
        size * size), apart, so no slice of a product enters the backward pass; converted once per content."""
        buffer = getattr(self, name)
        key = (buffer.data_ptr(), buffer._version, buffer.device)
        cached = self._float_cache.get(name)
        if cached is None or cached[0] != key:
            layers = buffer.float().div(255).view(len(buffer), 4, -1)
            cached = (key, (layers[:, :3].reshape(len(buffer), -1).contiguous(), layers[:, 3].contiguous()))
            self._float_cache[name] = cached
        return cached[1]

    def layer(self, name: str, choice: dict[str, torch.Tensor], gate: torch.Tensor | None = None):
        """The chosen layer, colour (N, 3 * size * size) and alpha (N, size * size): the choices' outer
        product weighs every option combination; `gate` (N,) scales it (a top without the part's slot)."""
        weights = None
        for axis in LAYER_AXES[name]:
            c = choice[axis]
            weights = c if weights is None else (weights[:, :, None] * c[:, None, :]).flatten(1)
        if gate is not None:
            weights = weights * gate[:, None]
        colour, alpha = self.flat_layers(name)
        return weights @ colour.to(weights.dtype), weights @ alpha.to(weights.dtype)

    def forward(self, choice: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.layers_loaded:
            raise RuntimeError("the avatar renderer has no layers: load_layers(layers.npz) first "
                               "(DTN's fit_to_training_data does)")
        top = choice["top"]
        n, pixels = len(top), self.size * self.size
        out = torch.ones(n, 3, pixels, device=top.device, dtype=top.dtype)
        for name in PAINT_ORDER:
            if name == "top":
                (hair, hair_alpha), (hat, hat_alpha) = self.layer("top_hair", choice), self.layer("top_hat", choice)
                colour, alpha = hair + hat, hair_alpha + hat_alpha
            elif name in ("facial_hair", "accessory"):   # drawn only inside a top with the slot
                colour, alpha = self.layer(name, choice, top @ getattr(self, "top_has_" + name).to(top.dtype))
            else:
                colour, alpha = self.layer(name, choice)
            out = colour.view(n, 3, pixels) + (1 - alpha[:, None]) * out
        return (out * 2 - 1).view(n, 3, self.size, self.size)


def choose(logits: torch.Tensor, mode: str, training: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """One part's choice (N, options) from its logits: one-hot of the most probable option in use; in
    training as `mode` says (module docstring)."""
    probabilities = logits.float().softmax(1)
    if training and mode == "soft":
        return probabilities
    if training and mode == "gumbel":
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-6, 1 - 1e-6)
        probabilities = (logits.float() - torch.log(-torch.log(uniform))).softmax(1)
    hard = F.one_hot(probabilities.argmax(1), probabilities.shape[1]).to(probabilities.dtype)
    return hard - probabilities.detach() + probabilities if training else hard


class PartsGenerator(nn.Module):
    """g = R o h (module docstring): features (N, E) -> (N, 3, size, size) in [-1, 1]."""

    def __init__(self, features_in: nn.Module, width: int, size: int, choice: str = "straight_through"):
        super().__init__()
        if choice not in CHOICES:
            raise ValueError(f"train.dtn.choice must be one of {CHOICES}, not {choice!r}")
        self.input, self.choice = features_in, choice
        self.renderer = LayeredAvatarRenderer(size)
        self.counts = self.renderer.counts
        self.head = nn.Sequential(nn.Linear(features_in.out_dim, width), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.Linear(width, sum(self.counts.values())))

    def logits(self, features: torch.Tensor, source_rows: int) -> dict[str, torch.Tensor]:
        flat = self.head(self.input(features, source_rows))
        return dict(zip(self.counts, flat.split(list(self.counts.values()), dim=1)))

    def choices(self, features: torch.Tensor, source_rows: int) -> dict[str, torch.Tensor]:
        return {part: choose(logits, self.choice, self.training)
                for part, logits in self.logits(features, source_rows).items()}

    def draw(self, features: torch.Tensor, source_rows: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The drawn avatars and h's logits per part."""
        logits = self.logits(features, source_rows)
        return self.renderer({part: choose(v, self.choice, self.training) for part, v in logits.items()}), logits

    def forward(self, features: torch.Tensor, source_rows: int, with_logits: bool = False):
        """The drawn avatars; with_logits: and h's logits per part."""
        drawn = self.draw(features, source_rows)
        return drawn if with_logits else drawn[0]

    def parts_loss(self, logits: dict[str, torch.Tensor], parts: torch.Tensor) -> torch.Tensor:
        """L_TID in part space (ours, `tid_parts`): cross-entropy of h's choice for t against t's own parts
        (parts: (N, parts) option indices, CHOSEN_PARTS order), each part where t shows it (a hat colour
        under hair, a beard's colour without a beard, are not seen), averaged over parts."""
        parts = parts.long()
        top = parts[:, CHOSEN_PARTS.index("top")]
        is_hair = self.renderer.top_is_hair[top].bool()
        facial = self.renderer.top_has_facial_hair[top].bool() & (parts[:, CHOSEN_PARTS.index("facial_hair")] > 0)
        shown = {"hair_color": is_hair, "hat_color": ~is_hair, "facial_hair_color": facial,
                 "facial_hair": self.renderer.top_has_facial_hair[top].bool(),
                 "accessory": self.renderer.top_has_accessory[top].bool(),
                 "clothing_color": parts[:, CHOSEN_PARTS.index("clothing")] > 0}   # option 0: NONE
        losses = []
        for k, part in enumerate(CHOSEN_PARTS):
            each = F.cross_entropy(logits[part].float(), parts[:, k], reduction="none")
            mask = shown.get(part)
            losses.append(each.mean() if mask is None else (each * mask).sum() / mask.sum().clamp(min=1))
        return torch.stack(losses).mean()


# ================================================================ DTN
FROM_S, FROM_T, REAL_T = 0, 1, 2   # D's classes
F_DIM = {"pool": 1792, "embedding": 512}   # f_layer -> f's dimension


class FeatureInput(nn.Module):
    """What g reads of f (N, E): f standardised per domain (`f_standardise`), on T's top principal axes
    (`f_components`), each standardised again per domain; `out_dim` wide."""

    def __init__(self, embed_dim: int, standardise: bool = False, components: int = 0):
        super().__init__()
        # per-domain standardisation of f (ours, `f_standardise`): S's and T's features each to zero mean
        # and unit variance per dimension (batch statistics in training, running ones after), so f(s)
        # arrives in the distribution g learned to draw from f(t) (domain-specific batch norm, Chang et al. 2019)
        self.standardise = nn.ModuleList([nn.BatchNorm1d(embed_dim, affine=False) for _ in range(2)]
                                         if standardise else [])
        # T's principal directions (ours, `f_components`): g reads f's coordinates on the top `components`
        # principal axes of T's (standardised) f, each standardised again per domain. Fitted once from
        # T's training features (fit_basis) and saved with the weights.
        self.components = components
        if components:
            self.register_buffer("basis", torch.zeros(embed_dim, components))
            self.register_buffer("basis_fitted", torch.zeros((), dtype=torch.bool))
            self.standardise_components = nn.ModuleList([nn.BatchNorm1d(components, affine=False)
                                                         for _ in range(2)])
        self.out_dim = components or embed_dim

    def forward(self, features: torch.Tensor, source_rows: int) -> torch.Tensor:
        """features: f of S in the first `source_rows` rows, of T in the rest."""
        if self.standardise:
            features = per_domain(self.standardise, features, source_rows)
        if self.components:
            if not self.basis_fitted:
                raise RuntimeError("g reads T's principal components: fit_basis(f of T) first (setup does)")
            features = per_domain(self.standardise_components, features.float() @ self.basis, source_rows)
        return features

    @torch.no_grad()
    def fit_basis(self, f_t: torch.Tensor) -> None:
        """The top principal axes of T's f (N, E), standardised per dimension where g standardises f."""
        f_t = f_t.float()
        centred = f_t - f_t.mean(0)
        if self.standardise:
            centred = centred / (f_t.std(0) + 1e-5)
        if len(centred) <= self.components:
            raise ValueError(f"train.dtn.f_components = {self.components} principal axes of T's f need more "
                             f"targets than that; the training split has {len(centred)}")
        axes = torch.linalg.svd(centred, full_matrices=False).Vh[:self.components]
        self.basis.copy_(axes.T)
        self.basis_fitted.fill_(True)


class EmbeddingGenerator(nn.Module):
    """g, the paper's decoder (`g_kind: decoder`): an f-embedding (N, E) -> (N, 3, size, size) in [-1, 1]."""

    def __init__(self, features_in: FeatureInput, width: int, size: int = 64, upsample: str = "transposed"):
        super().__init__()
        self.input = features_in
        doublings = int(round(np.log2(size / 4)))
        channels = [width * 2 ** (doublings - 1 - i) for i in range(doublings)]   # 8w .. w at 4 .. size/2

        def upscale(cin: int, cout: int) -> nn.Module:
            """x2: a 4 x 4 transposed convolution stride 2, or (`resize`, Odena et al. 2016: no checkerboard
            of uneven kernel overlap) nearest-neighbour upsampling and a 3 x 3 convolution."""
            if upsample == "transposed":
                return nn.ConvTranspose2d(cin, cout, 4, 2, 1)
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1))

        def block(up: nn.Module, cout: int) -> list[nn.Module]:
            return [up, nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()]

        layers = block(ProjectTo4x4(features_in.out_dim, channels[0]), channels[0])   # 1 x 1 -> 4 x 4
        for cin, cout in zip(channels, channels[1:]):
            layers += block(upscale(cin, cout), cout)
        layers += [upscale(channels[-1], 3), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, source_rows: int) -> torch.Tensor:
        """features: f of S in the first `source_rows` rows, of T in the rest."""
        return self.net(self.input(features, source_rows))


def per_domain(norms: nn.ModuleList, features: torch.Tensor, source_rows: int) -> torch.Tensor:
    """S's rows (the first source_rows) through norms[0], T's through norms[1]."""
    parts = (features[:source_rows], features[source_rows:])
    return torch.cat([norm(part) for norm, part in zip(norms, parts) if len(part)])


class ProjectTo4x4(nn.Module):
    """The first upscaling, 1 x 1 -> 4 x 4: a 4 x 4 transposed convolution of a 1 x 1 input is a linear map
    to channels x 16, written as one. The same function (less a per-position bias, which the BatchNorm after
    it removes), but oneDNN's transposed-convolution backward from a 1 x 1 input took 115 ms of a 0.66 s game
    step at 1792 input channels; the matmul takes ~8 (14 x faster, fwd + bwd)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cout = cout
        self.linear = nn.Linear(cin, cout * 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(len(x), self.cout, 4, 4)


class TernaryDiscriminator(nn.Module):
    """D(x) -> (N, 3) logits over {G(s), G(t), real t}."""

    def __init__(self, width: int, size: int = 64):
        super().__init__()
        layers, cin = strided_layers(width, int(round(np.log2(size / 4))))
        layers.append(nn.Conv2d(cin, 3, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten(1)


def classes(n: int, label: int, device) -> torch.Tensor:
    return torch.full((n,), label, dtype=torch.long, device=device)


class DomainTransferNetwork(TransformMethod):
    name = "dtn"
    losses = ("loss_d", "loss_gang", "loss_const", "loss_const_parts", "loss_tid", "loss_tid_parts", "loss_tv",
              "loss_g")
    headline = (Metric("f_constancy", "higher"), Metric("retrieval_rank1", "higher", "retrieval rank-1"),
                Metric("retrieval_rank1_perturbed", "higher", "retrieval rank-1, perturbed",
                       note="retrieval through f of G(s) blurred (0.5 px), shifted (2 px) and saved as JPEG 75"),
                Metric("agreement_hair_light", "higher", "hair light/dark agreement",
                       note="balanced accuracy of the avatar reader's hair colour of G(s) vs CelebA's"),
                Metric("identity_acc", "higher", "identity acc. / ceiling (dlib)", "identity_ceiling",
                       "avatar vs another photo of the person"),
                Metric("fid", "lower", "FID", note="against the real test avatars"), Metric("kid", "lower", "KID"))

    flip_augment = False   # the cached f(s), f(t) are of the unflipped images (module docstring)

    def __init__(self, params, common, image_size: int = 64):
        super().__init__(params, common, image_size)
        features_in = FeatureInput(F_DIM[params.f_layer], params.f_standardise, params.f_components)
        if params.g_kind == "parts":
            if params.target != "avatars":
                raise ValueError(f"train.dtn.g_kind = parts draws python-avatars' parts; target {params.target!r} "
                                 "has none: set g_kind: decoder")
            self.g = PartsGenerator(features_in, params.h_width, image_size, params.choice)
        else:
            self.g = EmbeddingGenerator(features_in, params.g_width, image_size, params.g_upsample)
        self.D = TernaryDiscriminator(params.d_width, image_size)
        self.f = None   # FaceNet, attached by setup(); fixed, never saved with the method
        # the mean f of each domain at const_layer (rows: S, T) over the whole training split, fitted once
        # (fit_to_training_data); with const_centred, L_CONST compares each face's and each avatar's offset
        # from its own domain's mean
        self.register_buffer("const_means", torch.zeros(2, F_DIM[params.const_layer]))
        self.register_buffer("const_means_fitted", torch.zeros((), dtype=torch.bool))

    def setup(self, root: Path, device) -> None:
        self.attach_f(load_fixed_f(root, device))

    def fit_to_training_data(self, batches) -> None:
        """From every training face's and target's cached f: g's principal axes of T's f (f_components)
        and each domain's mean f at const_layer (const_centred); the parts generator's layers."""
        device = self.device()
        faces = {name: v.to(device) for name, v in batches.main.all_values().items()}
        targets = {"target_" + name: v.to(device) for name, v in batches.aux["target"].all_values().items()}
        g = unwrap(self.g)
        if self.params.f_components:
            g.input.fit_basis(targets["target_f"])
        if isinstance(g, PartsGenerator):
            layers = batches.aux["target"].fixed
            if not layers:
                raise ValueError("dtn's parts generator needs the avatars' layers in its training data "
                                 "(training_data loads data/avatars/layers.npz)")
            g.renderer.load_layers(layers)
        self.fit_domain_means(self.kept_features(faces), self.kept_features(targets, "target_"))
        if isinstance(g, PartsGenerator) and self.params.const_parts:
            if "target_parts" not in targets:
                raise KeyError("dtn's const_parts needs the training avatars' parts: training_data gives them")
            parts_t = targets["target_parts"].long()
            if self.params.assign_bank:   # the training avatars and R's draws, all read through J
                drawn = torch.from_numpy(sample_part_indices(self.params.assign_bank, self.common.seed))
                bank = torch.cat([parts_t, drawn.to(device)])
                self.fit_assignment(self.f_of_drawn(bank), bank)
            else:                         # the training avatars, their cached f
                self.fit_assignment(self.kept_features(targets, "target_"), parts_t)
            if self.assign_steps() and self.params.assign_synthetic:
                self.fit_face_distribution(faces["f"])

    def attach_f(self, facenet) -> None:
        self.attach_fixed("f", facenet)

    def trainable(self):
        return {"g": self.g, "D": self.D}

    def configure_optimizers(self):
        p = self.params
        return {"g": adam(unwrap(self.g).parameters(), p.lr, (p.beta1, 0.999)),
                "D": adam(unwrap(self.D).parameters(), p.d_lr or p.lr, (p.beta1, 0.999))}

    def train_step(self, batch, step, generator):
        if self.f is None:
            raise RuntimeError("dtn needs f: call setup(root) (the training loop does)")
        p, opt = self.params, self.optimizers
        f_s, f_t, t = batch["f"], batch["target_f"], batch["target_image"]
        kept = self.kept_features(batch)   # f(s) at const_layer, what L_CONST keeps
        parts_t = batch.get("target_parts")   # t's own parts (the parts generator's L_TID in part space)
        n_s, n_t, device = len(f_s), len(f_t), t.device
        assigning = self.assign_steps()
        if step < assigning:
            return self.assign_step(f_s, f_t, kept, parts_t, generator)
        if step < assigning + p.tid_warmup:
            return self.warmup_step(f_s, f_t, t, kept, parts_t)
        if step == assigning + p.tid_warmup > 0:
            # a fresh Adam for the game: moments sized to the small L_TID gradients would turn the
            # first, far larger L_GANG / L_CONST gradients into steps ~15x lr that wreck the warm g
            opt["g"].state.clear()

        # ---------------- 1. ternary D: G(s) -> 1, G(t) -> 2, t -> 3, in ONE batch (shared BatchNorm
        # statistics: with three separate batches D could tell them apart by their statistics alone)
        labels = torch.cat([classes(n_s, FROM_S, device), classes(n_t, FROM_T, device), classes(n_t, REAL_T, device)])
        with torch.no_grad():
            fake_s, fake_t = self.generate_both(f_s, f_t)
        loss_d = 3 * F.cross_entropy(self.D(torch.cat([fake_s, fake_t, t])).float(), labels)
        opt["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opt["D"].step()

        # ---------------- 2. g, `g_steps` times on this batch: look like a real t to D, keep f, be the
        # identity on T, be smooth
        alpha = self.alpha_at(step - assigning - p.tid_warmup)
        for _ in range(p.g_steps):
            losses = self.generator_step(f_s, f_t, t, kept, alpha, generator, parts_t)
        return self.loss_row(losses | {"loss_d": loss_d.item()})

    def generator_step(self, f_s, f_t, t, kept, alpha: float, generator, parts_t=None) -> dict[str, float]:
        """One Adam step of g on L_G = L_GANG + alpha L_CONST + beta L_TID + gamma L_TV."""
        p, n_s, n_t, device = self.params, len(f_s), len(f_t), t.device
        fake_s, fake_t, drawn = self.drawn_losses(f_s, f_t, t, kept, parts_t)
        logits = self.D(torch.cat([fake_s, fake_t, t])).float()[:n_s + n_t]
        loss_gang = 2 * F.cross_entropy(logits, classes(n_s + n_t, REAL_T, device))
        if alpha > 0:   # f reads the first const_faces of the batch (the batch is drawn at random)
            k = p.const_faces or n_s
            seen = fake_s[:k]
            if p.const_shift or p.const_blur:
                seen = shift_and_blur(seen, p.const_shift, p.const_blur, generator)
            read, wanted = self.f_of(seen).float(), kept[:k].float()
            if p.const_centred:   # G(s)'s place among avatars is the face's place among faces
                if not self.const_means_fitted:
                    raise RuntimeError("const_centred L_CONST needs each domain's mean f: call "
                                       "fit_to_training_data(batches) first (the training loop does)")
                read, wanted = read - self.const_means[FROM_T], wanted - self.const_means[FROM_S]
            loss_const = (1 - F.cosine_similarity(read, wanted, dim=1)).mean()
        else:   # no f pass while alpha is 0 (the start of the ramp)
            loss_const = torch.zeros((), device=device)
        loss_tv = total_variation(fake_s, per_image_sum=True) + total_variation(fake_t, per_image_sum=True)
        loss_g = (loss_gang + alpha * loss_const + p.beta * drawn["loss_tid"] + p.tid_parts * drawn["loss_tid_parts"]
                  + p.const_parts * drawn["loss_const_parts"] + p.gamma * loss_tv)
        opt = self.optimizers["g"]
        opt.zero_grad(set_to_none=True)
        loss_g.backward()
        opt.step()
        return {"loss_gang": loss_gang.item(), "loss_const": loss_const.item(), "loss_tv": loss_tv.item(),
                "loss_g": loss_g.item()} | {name: v.item() for name, v in drawn.items()}

    def kept_features(self, batch: dict, prefix: str = "") -> torch.Tensor:
        """f at const_layer of the batch's faces (prefix "") or targets ("target_"): their f, or, where g
        reads another layer, the cached const-layer features under "f_const"."""
        p = self.params
        if p.const_layer == p.f_layer:
            return batch[prefix + "f"]
        if prefix + "f_const" not in batch:
            raise KeyError(f"dtn's batch lacks {prefix}f_const, f at const_layer {p.const_layer!r} "
                           f"(g reads {p.f_layer!r}); training_data provides it")
        return batch[prefix + "f_const"]

    @torch.no_grad()
    def fit_domain_means(self, kept_s: torch.Tensor, kept_t: torch.Tensor) -> None:
        """The mean f at const_layer of S's faces (kept_s) and of T's targets (kept_t), all of them."""
        self.const_means.copy_(torch.stack([kept_s.float().mean(0), kept_t.float().mean(0)]))
        self.const_means_fitted.fill_(True)

    def steady_step(self) -> int:
        return self.assign_steps() + self.params.tid_warmup

    def assign_steps(self) -> int:
        """How many first steps are assign_steps (parts generator with const_parts only)."""
        p = self.params
        return p.assign_steps if isinstance(unwrap(self.g), PartsGenerator) and p.const_parts else 0

    def f_of(self, images: torch.Tensor) -> torch.Tensor:
        """f(images) at `const_layer`, what L_CONST compares (differentiable w.r.t. the images)."""
        return self.f.features(images)[self.params.const_layer]

    def alpha_at(self, game_step: int) -> float:
        """alpha, raised linearly from 0 over the first `alpha_ramp` game steps (ours; the paper: constant)."""
        ramp = self.params.alpha_ramp
        return self.params.alpha * (min(1.0, game_step / ramp) if ramp else 1.0)

    def generate_both(self, f_s, f_t):
        """g(f(s)) and g(f(t)) in ONE batch: g's BatchNorm then learns the statistics of the mixture it
        sees at test time. Separate batches normalise S and T each by their own statistics, which hides
        the gap between the two clusters of embeddings in training but not in eval mode, where every
        G(s) then comes out the same."""
        fakes = self.g(torch.cat([f_s, f_t]), len(f_s))
        return fakes[:len(f_s)], fakes[len(f_s):]

    def drawn_losses(self, f_s, f_t, t, kept, parts_t=None):
        """G(s), G(t) (one batch, as generate_both) and the terms that need no D and no f pass:
        L_TID = d2(t, G(t)); with the parts generator, L_TID in part space (`tid_parts`,
        PartsGenerator.parts_loss on t's own parts) and L_CONST by assignment (`const_parts`,
        const_parts_loss); 0 where off."""
        g, zero = unwrap(self.g), torch.zeros((), device=t.device)
        p = self.params
        if not isinstance(g, PartsGenerator) or not (p.tid_parts or p.const_parts):
            fake_s, fake_t = self.generate_both(f_s, f_t)
            return fake_s, fake_t, {"loss_tid": F.mse_loss(fake_t.float(), t.float()),
                                    "loss_tid_parts": zero, "loss_const_parts": zero}
        fakes, logits = self.g(torch.cat([f_s, f_t]), len(f_s), with_logits=True)
        n_s = len(f_s)
        losses = {"loss_tid": F.mse_loss(fakes[n_s:].float(), t.float()), "loss_tid_parts": zero,
                  "loss_const_parts": zero}
        if p.tid_parts:
            if parts_t is None:
                raise KeyError("dtn's tid_parts needs the targets' parts (target_parts): training_data gives them")
            losses["loss_tid_parts"] = g.parts_loss({part: v[n_s:] for part, v in logits.items()}, parts_t)
        if p.const_parts:
            losses["loss_const_parts"] = self.const_parts_loss({part: v[:n_s] for part, v in logits.items()}, kept)
        return fakes[:n_s], fakes[n_s:], losses

    @torch.no_grad()
    def fit_assignment(self, kept_t: torch.Tensor, parts_t: torch.Tensor) -> None:
        """The bank's avatars' unit centred f at const_layer and their parts, for const_parts_loss (kept
        with the method while it trains, not saved: they are the training split's and R's draws)."""
        self.assignment = (F.normalize(kept_t.float() - self.const_means[FROM_T], dim=1), parts_t.long())

    @torch.no_grad()
    def f_of_drawn(self, parts: torch.Tensor, chunk: int = 200) -> torch.Tensor:
        """f at const_layer of the avatars R draws from `parts` (N, len(CHOSEN_PARTS)), read through J as
        L_CONST reads G(s) (const_shift, const_blur; seeded): the bank's place in L_CONST's own measure.

        Why J: an avatar's f without it holds pixel-exact detail that a shift and blur wipe out. With a
        bank of 9,400 avatars, the nearest-avatar vote for 990 test faces scores retrieval rank-1 0.44 read
        plain but 0.25 after evaluate@dtn's perturbation; chosen in f(J(avatar)), 0.33 and 0.33 (offline:
        photo-centred cosine, tau 0.02, J's mean over 2 draws; with this bank, L_CONST's centred measure,
        one draw and tau 0.05: 0.26, 0.27)."""
        g, p = unwrap(self.g), self.params
        generator = torch.Generator().manual_seed(self.common.seed)
        counts = [g.counts[part] for part in CHOSEN_PARTS]
        read = []
        with autocast_like_training(self.device()):
            for rows in parts.long().split(chunk):
                drawn = g.renderer({part: F.one_hot(rows[:, k], counts[k]).float()
                                    for k, part in enumerate(CHOSEN_PARTS)})
                if p.const_shift or p.const_blur:
                    drawn = shift_and_blur(drawn, p.const_shift, p.const_blur, generator)
                read.append(self.f_of(drawn).float())
        return torch.cat(read)

    @torch.no_grad()
    def fit_face_distribution(self, f_s: torch.Tensor) -> None:
        """Mean and Cholesky factor of the covariance of S's f at f_layer, for synthetic_faces."""
        f_s = f_s.double()
        covariance = torch.cov(f_s.T)
        jitter = 1e-6 * covariance.diagonal().mean() * torch.eye(len(covariance), dtype=covariance.dtype,
                                                                   device=covariance.device)
        self.face_distribution = (f_s.mean(0).float(), torch.linalg.cholesky(covariance + jitter).float())

    def synthetic_faces(self, n: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n synthetic faces' f at f_layer, drawn from N(mean, cov) of S's f, and their f at const_layer
        (FaceNet's bottleneck for the pool; unit length for the embedding).

        Why: the assignment (const_parts_loss) is a function of f(s) that the bank defines everywhere,
        but h sees it only at the ~8,000 training faces and fits them without generalising. Offline (an
        MLP reading the standardised embedding alone, no tid_parts, a bank of 9,400), half the batch
        synthetic lifts test retrieval rank-1 from 0.26 to 0.30; in dtn itself, see assign_step."""
        mean, factor = self.face_distribution
        noise = torch.randn(n, len(mean), generator=generator).to(mean.device)
        f = mean + noise @ factor.T
        p = self.params
        if p.f_layer == "embedding":
            f = F.normalize(f, dim=1)
        if p.const_layer == p.f_layer:
            return f, f
        if p.f_layer != "pool":
            raise ValueError("train.dtn.assign_synthetic reads the embedding of a synthetic pool; with "
                             f"f_layer {p.f_layer!r} and const_layer {p.const_layer!r} set assign_synthetic: 0")
        net = self.f.net
        return f, F.normalize(net.bottleneck_bn(net.bottleneck(f)), dim=1, eps=1e-5)

    def assign_step(self, f_s, f_t, kept, parts_t, generator):
        """h alone on the part-space terms, tid_parts L_TID(parts) + const_parts L_CONST by assignment,
        over the batch's faces and `assign_synthetic` synthetic ones (synthetic_faces): no render, no D, no
        f pass, ~0.04 s a step (the render-and-D steps that follow fit ~600 in a 3-minute budget).

        Measured (issue 21; bank 8,000, 1,500 steps, 96 synthetic faces a step): h alone after these steps
        scores perturbed retrieval 0.18 (its teacher, the bank's vote, 0.27); h_width 1024 and tau 0.02:
        0.19; reading the embedding: 0.20; without the synthetic faces: 0.18. h's cross-entropy on the
        assignment barely falls below the parts' marginals (2.52 -> 2.37) while L_TID in part space falls
        (2.46 -> 0.89): h does not learn the vote from f. Whole 3-minute runs (evaluate@dtn, FID /
        retrieval plain, perturbed): 45.7 / 0.17, 0.19 beside the default's 46.3 / 0.20, 0.16; hence off
        by default (assign_steps 0, assign_bank 0)."""
        g, p = unwrap(self.g), self.params
        if p.assign_synthetic:
            synthetic, synthetic_kept = self.synthetic_faces(p.assign_synthetic, generator)
            f_s = torch.cat([f_s.float(), synthetic.to(f_s.device)])
            kept = torch.cat([kept.float(), synthetic_kept.to(f_s.device)])
        n_s = len(f_s)
        logits = g.logits(torch.cat([f_s.float(), f_t.float()]), n_s)
        zero = torch.zeros((), device=f_s.device)
        loss_tid = g.parts_loss({part: v[n_s:] for part, v in logits.items()}, parts_t) if p.tid_parts else zero
        loss_const = self.const_parts_loss({part: v[:n_s] for part, v in logits.items()}, kept)
        loss = p.tid_parts * loss_tid + p.const_parts * loss_const
        opt = self.optimizers["g"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return self.loss_row({"loss_g": loss.item(), "loss_tid_parts": loss_tid.item(),
                              "loss_const_parts": loss_const.item()})

    def loss_row(self, measured: dict[str, float]) -> dict[str, float]:
        """The logged losses in `self.losses` order; NaN for a term the step did not compute: the assign and
        warm-up steps run no D and no f, a game step no f while alpha is 0, g_kind decoder no part terms."""
        return {name: measured.get(name, float("nan")) for name in self.losses}

    def const_parts_loss(self, logits_s: dict[str, torch.Tensor], kept_s: torch.Tensor) -> torch.Tensor:
        """L_CONST by assignment (ours, `const_parts`): each face's target is the part choice of its
        `const_neighbours` nearest avatars of the assignment bank (the training avatars, and `assign_bank`
        more drawn by R, see fit_to_training_data) in centred f at const_layer (cos(f(t) - m_T, f(s) - m_S),
        L_CONST's own measure), weighted by softmax(cos / const_tau); h's cross-entropy against it.

        Why: L_CONST's gradient through the part choices is a poor guide. Optimising each of 100 test
        faces' part logits directly on L_CONST (straight-through, 100 Adam steps) reaches a centred cos of
        0.16 (retrieval 0.05 among 100), while the nearest of the 1,400 training avatars has 0.40
        (retrieval 0.33): the rendered avatars are a sample of what G can draw, and the nearest of them
        is the best G(s) seen."""
        if getattr(self, "assignment", None) is None:
            raise RuntimeError("dtn's const_parts needs the training avatars' f and parts: "
                               "fit_to_training_data(batches) first (the training loop does)")
        directions, parts = self.assignment
        faces = F.normalize(kept_s.float() - self.const_means[FROM_S], dim=1)
        nearest = (faces @ directions.T).topk(min(self.params.const_neighbours, len(directions)), dim=1)
        weights = (nearest.values / self.params.const_tau).softmax(1)             # (N, k)
        losses = []
        for index, part in enumerate(CHOSEN_PARTS):
            log_p = logits_s[part].float().log_softmax(1)                           # (N, options)
            chosen = log_p.gather(1, parts[nearest.indices][:, :, index])          # (N, k)
            losses.append(-(weights * chosen).sum(1).mean())
        return torch.stack(losses).mean()

    def warmup_step(self, f_s, f_t, t, kept, parts_t=None):
        """g alone on the terms without D or f: beta L_TID + gamma L_TV(G(t)) (+ the parts generator's
        part-space terms): g learns to draw T from f(T) before the game starts (f(s) goes through g too,
        for the BatchNorm statistics, and for L_CONST by assignment where it is on)."""
        p, opt = self.params, self.optimizers
        _, fake_t, drawn = self.drawn_losses(f_s, f_t, t, kept, parts_t)
        loss_tv = total_variation(fake_t, per_image_sum=True)
        loss_g = (p.beta * drawn["loss_tid"] + p.tid_parts * drawn["loss_tid_parts"]
                  + p.const_parts * drawn["loss_const_parts"] + p.gamma * loss_tv)
        opt["g"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["g"].step()
        return self.loss_row({"loss_tv": loss_tv.item(), "loss_g": loss_g.item()}
                             | {name: v.item() for name, v in drawn.items()})

    def progress_probe(self, root, labels, n):
        """FID of G(s) for n fixed CelebA test faces against the real test targets (fid_stats): does g
        draw the target domain? (f-constancy cannot say: g can win it with noise f reads.)"""
        from facegan.data.manifest import read_manifest
        from facegan.data.datasets import set_folder
        from facegan.metrics.fid import fid_kid_of, load_reference, reference_path
        from facegan.pretrained.features import load_features

        reference = load_reference(reference_path(root, self.params.target, "test", self.image_size))
        frame = read_manifest(set_folder(root, "celeba"))
        test = frame.loc[frame["split"] == "test", "path"].to_numpy()
        chosen = np.random.default_rng(self.common.seed).permutation(len(test))[:n]
        layer = self.params.f_layer
        f_s = torch.from_numpy(load_features(root, "celeba", test[chosen], kinds=(layer,))[layer])

        @torch.no_grad()
        def fid() -> dict[str, float]:
            fakes = torch.cat([self.g.eval()(chunk.to(self.device()), len(chunk)).float().cpu()
                               for chunk in f_s.split(64)])
            self.g.train()
            return {f"fid_{len(f_s)}": fid_kid_of(fakes, reference, kid_subsets=10)["fid"]}
        return fid

    # ---------------------------------------------------------------- use
    def transform(self, crops) -> Transformed:
        """G(x) = g(f(x)); each note gives the identity kept, cos of FaceNet's embeddings of photo and avatar."""
        with autocast_like_training(self.device()):
            f_s = self.features_of(crops)   # one FaceNet pass: g's input and the identity embedding
            avatars = self.g.eval()(f_s[self.params.f_layer], len(crops)).float()
            kept = cosine(f_s["embedding"].cpu().numpy(), self.embed(avatars).cpu().numpy())
        notes = [f"{self.params.target} avatar; identity kept: cos(FaceNet(photo), FaceNet(avatar)) = {k:.3f}"
                 for k in kept]
        return Transformed(avatars.cpu(), {}, notes)

    @torch.no_grad()
    def features_of(self, photos: torch.Tensor, batch: int = 64) -> dict[str, torch.Tensor]:
        """FaceNet's layers of photos (N, 3, H, W) in [-1, 1], in one pass: {"pool": (N, 1792), "embedding": (N, 512)}."""
        device = self.device()
        parts = [self.f.features(photos[i:i + batch].to(device)) for i in range(0, len(photos), batch)]
        return {layer: torch.cat([part[layer].float() for part in parts]) for layer in F_DIM}

    def embed(self, photos: torch.Tensor, layer: str = "embedding", batch: int = 64) -> torch.Tensor:
        """FaceNet's `layer` of photos: (N, 3, H, W) in [-1, 1] -> (N, D); by default the identity embedding."""
        return self.features_of(photos, batch)[layer]

    def sample_grid(self, generator):
        """Rows of 8: training faces, their G(s); avatars, their G(t)."""
        if self.examples is None:
            raise RuntimeError("dtn.sample_grid needs example images (start_training sets them)")
        g = self.g.eval()
        with torch.no_grad():
            rows = [self.examples["image"][:8], g(self.examples["f"][:8], 8),
                    self.examples["target_image"][:8], g(self.examples["target_f"][:8], 0)]
        self.g.train()
        return torch.cat([r.float().to(rows[0].device) for r in rows])

    # ---------------------------------------------------------------- data and evaluation
    @staticmethod
    def training_data(root, params) -> TrainingData:
        """S: aligned CelebA train faces with f(s); T (aux "target"): the target set's train images with f(t).
        f of both, and of their mirror images (what a flip draws), comes from the feature cache."""
        from facegan.data.datasets import load_images, set_folder
        from facegan.pretrained.features import load_features

        def with_f(name: str, layers: tuple[str, ...]) -> tuple[TrainingData, pd.DataFrame]:
            images, frame = load_images(set_folder(root, name), ["train"])
            f = load_features(root, name, frame["path"], kinds=layers)
            return TrainingData(images, values={"f": (f[layers[0]], None)} |
                                ({"f_const": (f[layers[1]], None)} if len(layers) > 1 else {})), frame

        layers = tuple(dict.fromkeys((params.f_layer, params.const_layer)))
        (faces, _), (targets, target_frame) = with_f("celeba", layers), with_f(params.target, layers)
        if params.g_kind == "parts":
            from facegan.data.avatars import load_layers, part_indices

            targets.fixed = load_layers(set_folder(root, params.target))
            indices = part_indices(target_frame)
            targets.values["parts"] = (np.stack([indices[part] for part in CHOSEN_PARTS], 1).astype(np.float32), None)
        if targets.images.shape[1:] != faces.images.shape[1:]:
            raise ValueError(f"{params.target} images are {targets.images.shape[1]} px but the faces are "
                             f"{faces.images.shape[1]}: set render_avatars.size equal to align.size")
        faces.aux["target"] = targets
        return faces

    @staticmethod
    def synthetic_data(params, n, image_size, seed=0) -> TrainingData:
        """Faces with random unit f(s), and n // 2 targets with theirs."""
        rng = np.random.default_rng(seed)
        faces, targets = random_images(rng, n, image_size), random_images(rng, n // 2, image_size)
        f_s, f_t = (random_unit(rng, k, F_DIM[params.f_layer]) for k in (n, n // 2))
        def kept(k: int) -> dict:
            return ({"f_const": (random_unit(rng, k, F_DIM[params.const_layer]), None)}
                    if params.const_layer != params.f_layer else {})
        fixed, parts = {}, {}
        if params.g_kind == "parts":
            fixed = random_layers(rng, image_size)
            counts = option_counts()
            parts = {"parts": (np.stack([rng.integers(0, counts[part], n // 2) for part in CHOSEN_PARTS], 1)
                               .astype(np.float32), None)}
        return TrainingData(faces, values={"f": (f_s, None)} | kept(n),
                            aux={"target": TrainingData(targets, values={"f": (f_t, None)} | kept(n // 2) | parts,
                                                        fixed=fixed)})

    def evaluate(self, context) -> dict:
        """f-constancy, identity retrieval, L_TID on test targets, FID of G(S) vs real test targets, grids."""
        from facegan.data.datasets import load_images, set_folder, to_tensor
        from facegan.metrics.avatars import attribute_agreement, load_reader, perturb
        from facegan.metrics.fid import load_reference, reference_of, reference_path
        from facegan.pretrained.features import load_features

        p, settings, own, batch = self.params, context.shared, context.own, context.shared.batch_size
        faces, frame = load_images(set_folder(context.root, "celeba"), ["test"])
        targets, target_frame = load_images(set_folder(context.root, p.target), ["test"])
        photos, real_t = to_tensor(faces), to_tensor(targets)
        device = self.device()
        # g reads f at f_layer; identity (f-constancy, retrieval) is judged on FaceNet's embedding either way
        layers = tuple(dict.fromkeys((p.f_layer, "embedding")))
        cached_s = load_features(context.root, "celeba", frame["path"], kinds=layers)
        f_s = torch.from_numpy(cached_s["embedding"])
        g_in_s = torch.from_numpy(cached_s[p.f_layer]).to(device)
        g_in_t = torch.from_numpy(load_features(context.root, p.target, target_frame["path"],
                                                kinds=(p.f_layer,))[p.f_layer]).to(device)
        with autocast_like_training(device):
            outputs = torch.cat([self.g.eval()(chunk, len(chunk)).float() for chunk in g_in_s.split(batch)])
            f_gs = self.embed(outputs)
            outputs_t = torch.cat([self.g(chunk, 0).float() for chunk in g_in_t.split(batch)])
        outputs, outputs_t = outputs.cpu(), outputs_t.cpu()
        result = {"test_faces": len(photos), "test_targets": len(real_t), "target": p.target}
        result.update(f_constancy(f_s.cpu().numpy(), f_gs.cpu().numpy(), settings.seed))
        identities = frame["identity"].to_numpy(str)
        result.update(retrieval(f_s.cpu().numpy(), f_gs.cpu().numpy(), identities, own.retrieval,
                                own.retrieval_sets, settings.seed))
        # the same through a blur, a 2-px shift and JPEG 75: patterns only f reads do not survive them
        with autocast_like_training(device):
            f_perturbed = self.embed(perturb(outputs))
        perturbed = retrieval(f_s.cpu().numpy(), f_perturbed.cpu().numpy(), identities, own.retrieval,
                              own.retrieval_sets, settings.seed)
        result |= {"retrieval_rank1_perturbed": perturbed["retrieval_rank1"],
                   "retrieval_rank1_perturbed_std": perturbed["retrieval_rank1_std"]}
        if p.target == "avatars":   # the reader knows the rendered avatars' parts; emoji have none
            result.update(attribute_agreement(load_reader(context.root), outputs, frame))
        result["l_tid_test"] = float(F.mse_loss(outputs_t, real_t).item())
        # smoothness: the per-image TV sum of G(s) against the real test targets' (noise is many times theirs)
        result["tv_outputs"] = float(total_variation(outputs, per_image_sum=True))
        result["tv_targets"] = float(total_variation(real_t, per_image_sum=True))
        result["tv_ratio"] = result["tv_outputs"] / result["tv_targets"]

        # an independent recognizer: g was trained against f, so f-constancy and retrieval can be won
        # with patterns only f reads; dlib verifies G(s) against another photo of the person
        check = context.identity_check(frame["path"], own.identity_faces)
        result["identity_faces"] = check.faces
        result.update(check(outputs[check.chosen]))

        # FID of G(S) vs the real test targets: the fid_stats reference (avatars), or, for a set
        # fid_stats does not cover (emoji: 286 images in all), every image of the set, computed here
        reference_file = reference_path(context.root, p.target, "test", outputs.shape[-1])
        if reference_file.exists():
            reference, result["fid_reference"] = load_reference(reference_file), f"{p.target} test split"
        else:
            every, _ = load_images(set_folder(context.root, p.target))
            reference = reference_of(every)
            result["fid_reference"] = f"every {p.target} image ({len(every)}), no fid_stats entry"
        result.update(context.fid_kid(outputs[:settings.n_samples], reference))

        order = np.random.default_rng(settings.seed).permutation(len(photos))[:16]
        context.save_grid(torch.cat([photos[order[:8]], outputs[order[:8]], photos[order[8:]], outputs[order[8:]]]),
                          ["face", "G(face)", "face", "G(face)"], "faces_to_avatars.png", per_row=8)
        context.save_grid(torch.cat([real_t[:8], outputs_t[:8]]), [p.target, f"G({p.target})"],
                          "target_identity.png", per_row=8)
        return result


def random_layers(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """Layers of render_layers' shapes with random premultiplied pixels (colour never above alpha)."""
    counts, layers = option_counts(), {}
    for name, axes in LAYER_AXES.items():
        shape = tuple(counts[a] for a in axes)
        alpha = rng.integers(0, 256, (*shape, 1, size, size), dtype=np.uint8)
        colour = (rng.random((*shape, 3, size, size)) * alpha).astype(np.uint8)
        layers[name] = np.concatenate([colour, alpha], axis=-3)
    flags = {name: rng.random(counts["top"]) < 0.8 for name in TOP_FLAGS}
    layers["top_hair"][~flags["top_is_hair"]] = 0   # a top takes the hair colour or the hat colour, as drawn
    layers["top_hat"][flags["top_is_hair"]] = 0
    return layers | flags


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def f_constancy(f_s: np.ndarray, f_gs: np.ndarray, seed: int) -> dict:
    """cos(f(s), f(G(s))) for the same face, beside the floor: the same with G(s') of another face s'."""
    others = np.random.default_rng(seed).permutation(len(f_s))
    clash = others == np.arange(len(f_s))
    others[clash] = (others[clash] + 1) % len(f_s)
    return {"f_constancy": float(cosine(f_s, f_gs).mean()),
            "f_constancy_random_pairs": float(cosine(f_s, f_gs[others]).mean()),
            "f_cosine_real_random_pairs": float(cosine(f_s, f_s[others]).mean())}


def retrieval(f_s: np.ndarray, f_gs: np.ndarray, identities: np.ndarray, n: int, sets: int, seed: int) -> dict:
    """Rank-1 identification of each source among n test faces of n different people from f(G(s))
    (cosine); averaged over `sets` random draws of the n. Chance is 1/n."""
    rng = np.random.default_rng(seed)
    first_of = {}
    for index, person in enumerate(identities):
        first_of.setdefault(person, index)
    candidates = np.array(sorted(first_of.values()))
    if len(candidates) < n:
        raise ValueError(f"retrieval among {n} needs {n} different people in the test split; it has {len(candidates)}")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)   # noqa: E731
    accuracies = []
    for _ in range(sets):
        chosen = rng.choice(candidates, size=n, replace=False)
        similarity = unit(f_gs[chosen]) @ unit(f_s[chosen]).T
        accuracies.append(float((similarity.argmax(1) == np.arange(n)).mean()))
    return {"retrieval_rank1": float(np.mean(accuracies)), "retrieval_rank1_std": float(np.std(accuracies)),
            "retrieval_n": n, "retrieval_sets": sets, "retrieval_chance": 1.0 / n}
