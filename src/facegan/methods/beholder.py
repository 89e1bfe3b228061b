"""Beholder-GAN (Diamant, Zadok, Baskin, Schwartz, Bronstein 2019, arXiv 1902.02593).

"Beauty is in the eye of the beholder": the generator is conditioned on the
VECTOR beta in R^K of K raters' scores, not on one mean score.

- Data (semi-supervised): the K per-rater predictors of stage `beauty`, trained
  on the London ratings, rate every aligned CelebA face (stage `pseudo_label`);
  London's own train faces join with their REAL ratings (`london_real`).
- G(z, beta): z ~ N(0, I), beta standardised per rater (c = (beta - mu) / sigma
  over the training labels, stored with the weights); the cgan generator
  (conditional batch norm on [z, c / sqrt(K)], 4 x 4 -> 64 x 64).
- D(x) -> (real/fake score, beta_hat): an SNGAN trunk with two heads. As in the
  paper, D does not see beta; it PREDICTS it:
      L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z, c')))] + lambda_beta * MSE(beta_hat(x), c)
      L_G = -E[D(G(z, c'))] + lambda_beta * MSE(beta_hat(G(z, c')), c')
  with c' the conditions of another real batch (the real label distribution).
  lambda_beta = 0.5 by default. Measured at the default budget (~1,380 steps):
  with lambda_beta = 1 and c fed raw, G drew one face per beta whatever z
  (FID 161, dlib called different z the same person 77 % of the time);
  with c / sqrt(K) and 0.5: FID 129, 13 %.
- Beautification (paper, Sec. 3.2): recover (z, beta) of a photo x from random
  starts by gradient descent on
      L(z, beta) = alpha * ||x - G(z, beta)||^2 + (1 - alpha) * ||f(x) - f(G(z, beta))||^2
  (f: FaceNet's embedding standing in for VGG-Face, whose weights are not
  obtainable offline), then regenerate G(z, beta + delta). delta is counted in
  standard deviations of each rater's training scores (beta_k + delta * sigma_k):
  the predicted scores spread much less than raw ratings (per-rater sigma
  0.1-1.1 points on the 1-7 scale), so one raw rating point would throw beta
  several sigma outside what G was trained on. The recovered beta is kept within
  +-INVERT_BOX sigma of the training mean for the same reason.

- Warm start (ours): an encoder E(x) -> (z, c), regressed in every training step on the
  D step's fakes G(z, c') and their (z, c') (latent regression, as BiGAN's baseline; a
  network, not optimisation, so it costs one small forward/backward a step), starts the
  inversion at E(photo). Measured on one trained model (32 held-out faces): 1 start x 30 steps
  from E(photo) against 4 random x 100, 5.4x faster, reconstruction PSNR 15.3 vs 14.3, dlib
  identity 0.76 vs 0.71, its final loss higher (0.21 vs 0.14). `train.beholder.encoder_width: 0` and
  `inversion.init: random` give the paper's random starts. From E(photo), 30 / 20 / 15 / 10 steps on
  the same faces and model (2 AVX2 cores): 2.13 / 1.70 / 1.32 / 0.85 s a face for the whole
  evaluation, PSNR 15.28 / 15.07 / 14.96 / 14.81, dlib identity of the reconstruction 0.76 / 0.84 /
  0.86 / 0.84 and of the beautified faces (delta 1) 0.82 / 0.81 / 0.79 / 0.75; the grids of the four
  were alike to the eye. FaceNet's forward and backward (72 ms a face-step in fp32, 92 % of a step)
  is the cost, so 15 is the default (`facegan beautify` ~1.4 s a photo there, the 1.5 s goal);
  FaceNet at 112 or 128 px instead of its 160 was cheaper but lost identity (0.49 and 0.70 beautified).

Step size (issue 25; cgan.py has the recipe comparison): Adam at 1e-3 for G and D by default, not
SNGAN's 2e-4. On 2 AVX2 cores, seed 0, FID (500 samples) / beauty_spearman across z / within z /
beautify rise rate at delta 1 / dlib identity of the beautified faces:
- 4 minutes (~270 steps): 2e-4 319 / -0.04 / -0.07 / 0.06 / 0.46; 1e-3 242 / 0.48 / 0.60 / 0.41 / 0.58;
- the default 9.5 minutes: 2e-4 (the cf9556a run) 315 / -0.19 / -0.33 / 0.13 / 0.79 (it beautified
  nothing, so identity stayed); 1e-3 (~600 steps) 96 / 0.77 / 0.92 / 0.97 / 0.59 (0.84 with --residual).
At 1e-3 the strips rise in beauty and the beautified faces move toward the London raters' taste,
women's faces among it (London's crowd rates women higher), which costs the identity figure.
`diffaugment` (DiffAugment on what D sees, D's beta head included) is off, as cgan's.
Batch 32 (the default; train.common's 64 before), the default 9.5 minutes at 1e-3: 1,240 steps against
600, FID 90 / beauty_spearman 0.81 / within z 0.93 / rise rate 0.91 / identity 0.58, against 96 / 0.77 /
0.92 / 0.97 / 0.59 at 64: more, smaller steps buy the control across z. (cGAN at batch 32 tied: cgan.py.)
lambda_beta 1 instead of 0.5 (600 steps, lr 1e-3): FID 116, beauty_spearman 0.77, within z 0.90, rise
rate 0.84, identity 0.66: no better on the control, worse on FID, so 0.5 stays.
Tried for identity, not shipped: after (z, c) is recovered, a per-photo offset on G's activation after
block k (8 / 16 / 32 px), fitted 15 more steps on the same loss and kept when regenerating at c + delta
(F-space inversion, as in BDInvert). On the lambda_beta 1 model's 32 faces (reconstruction identity /
rise rate at delta 1 / identity at delta 1): without 0.79 / 0.84 / 0.66; 8 px 0.89 / 0.69 / 0.63; 16 px
0.87 / 0.47 / 0.79; 32 px 0.92 / 0.22 / 0.83. The finer the offset, the more of the photo it carries and
the less of G's beauty change survives: identity and rise trade one for the other, as with `--residual`.

Pivotal tuning (ours, after Roich et al. 2021, PTI; `inversion.tune_steps`, default 100 at
`tune_lr` 1e-3): the paper regenerates G(z, beta + delta) from the recovered (z, beta), so the output is
whoever G draws nearest the photo; at this budget that face is another person (reconstruction identity
0.80). After the latent search, a copy of G's weights per photo (all but the conditional norms' maps of
[z, c], so beta acts as it does on G) is tuned on the pixel MSE to draw that photo at the pivot; then
G_x(z, beta + delta). On the 58cfa8b AVX512 model's 32 test faces (reconstruction PSNR / identity; rise
rate / identity at delta 1; at delta 0.5):
- none (the paper):                  16.0 / 0.80; 0.94 / 0.61; 0.84 / 0.74
- 50 steps at 3e-4 (PTI's lr):       27.9 / 0.91; 1.00 / 0.75; 0.84 / 0.85
- 75 steps at 1e-3:                  31.8 / 0.99; 0.91 / 0.83; 0.91 / 0.95
- **100 steps at 1e-3 (default)**:   33.0 / 0.99; 0.91 / 0.85; 0.84 / 0.94
- 200 steps at 1e-3:                 35.9 / 0.96; 0.91 / 0.83; 0.75 / 0.95
- 150 steps at 5e-4:                 33.6 / 0.95; 0.97 / 0.76; 0.88 / 0.92
- 100 steps at 1.5e-3:               33.2 / 0.94; 0.84 / 0.91; 0.75 / 0.94
- 60 / 100 steps at 3e-3:            29.9 / 32.3; rise 0.66 / 0.53: a G tuned that hard no longer follows beta.
The faces stay the person and change toward the judge's taste (softer, more feminine features, as the
London crowd rates women higher); at delta 2 artefacts appear. These settings were compared on the
evaluation's own 32 faces (identity's standard error there ~0.045), so read the default as one point on
a rise-identity frontier, not a tuned optimum. Cost: ~0.015 s a face-step (vmap of per-photo weights).
Which layers tune (`tune_from`), chosen on 64 VALIDATION faces (val split, its own dlib gallery) of the
same model, 100 steps at 1e-3 (rise rate / identity at delta 1; at delta 0.5; seconds for the 64):
- none:                                   0.98 / 0.66; 0.94 / 0.66;  30 s
- fc on (all of G, the table above):      0.80 / 0.89; 0.72 / 0.92; 146 s (fc's per-photo 4096 x 188 copy)
- **blocks.0 on (default)**:              0.84 / 0.84; 0.73 / 0.93;  86 s
- blocks.1 on:                            0.83 / 0.84; 0.70 / 0.92;  62 s
- blocks.2 on:                            0.80 / 0.81; 0.66 / 0.92;  57 s (reconstruction PSNR 27.8, not 31.8)
- blocks.0, 60 steps at 1.5e-3:           0.81 / 0.89; 0.69 / 0.95;  65 s
blocks.0 keeps fc, the layer that reads [z, beta], as G's: beta enters every tuned copy as it enters G.
On validation faces the default sits at 0.84 / 0.84 (standard errors ~0.045 / ~0.035): the rise-identity
frontier of this G at delta 1 passes near (0.84, 0.84) whichever layers tune.
The edit term (ours, `inversion.tune_edit`, default 2.5, 3 until the 56058c6 run (Budget, below); 0 = off):
while tuning, the tuned G also keeps G's own change under beta, weight w on
||(G_x(z, c + d) - G_x(z, c)) - (G(z, c + d) - G(z, c))||^2, d ~ U(0, 2) sd per photo and step (PTI's
locality idea applied to beta). Why: without it the tuned copy redraws the photo whatever beta, most of all for men (Male held, 64 validation faces: G's own predicted-beauty gain
from delta 0 to 1 was 0.26 for men and 0.34 for women, the tuned G's 0.01 and 0.20; rise rate at delta 1
men 0.64, women 0.87). With the paper's G(z, beta) it only moved along the rise-identity frontier (from
blocks.0, w 1: 0.83 / 0.78; w 3: 0.94 / 0.74), because G's edit carried a change of sex. With Male held,
the 6bd1203 model, validation faces (rise rate / identity at delta 1; reconstruction PSNR):
- 64 faces:  w 0 0.80 / 0.90 (31.6); w 1 0.83 / 0.92 (28.9); w 2 0.88 / 0.89 (27.2); w 3 0.88 / 0.89 (26.1);
  w 4 0.94 / 0.88 (25.2); w 6 0.94 / 0.80 (24.1); w 3 with 60 tuning steps 0.92 / 0.81 (24.7);
- 128 faces: w 0 0.73 / 0.875; **w 3 0.81 / 0.84** (26.5); w 4 0.84 / 0.82 (25.7) (ceiling 0.926).
The term costs a second tuned forward and backward per step (~0.6 s a face more). Its reconstruction is
less sharp (PSNR 26 against 32): the tuned copy no longer copies every pixel of the photo.
The perceptual term (`inversion.tune_feature`, off): PTI tunes on L2 + LPIPS; LPIPS's weights are not
obtainable offline, so the inversion's own FaceNet embedding distance, w ||f(G_x(z, c)) - f(x)||^2, joins the
pixel MSE. Measured on the bcb6b66 run's model (3,980 steps), 64 validation faces, edit term 3, rise / identity
at delta 1 (reconstruction identity; PSNR): w 0 0.92 / 0.876 (0.915; 25.4); w 0.01 0.89 / 0.860 (0.938; 25.4);
w 0.03 0.89 / 0.858 (0.938; 25.2); w 0.1 0.89 / 0.860 (0.931; 24.8), each +60 s for the 64 faces: the
reconstruction keeps more of the person, the beautified face does not, so it stays off.
Tried, not shipped: holding Young too (`keep: [Male, Young]`, London's real ratings dropped, as London
does not label age): 128 validation faces, w 0: rise / identity at delta 1 0.61 / 0.82 - closing
rejuvenation as well leaves the judge little to raise, and identity did not gain.
Also tried: adding G's own change in pixels to the tuned reconstruction, G_x(z, c) + G(z, c + d) -
G(z, c): rise 0.77 / identity 0.91 on the 64 faces - the judge does not read a blurred G's pixel change
on a sharp face as beauty.

Identity term (ours, `train.beholder.lambda_identity`, off by default): G also pays
||f(G(z, c + d)) - f(G(z, c))||^2 (FaceNet's unit embedding, d ~ U(0, 2) sd on every rater, 8 fakes every
4th step), so that raising beta keeps the person. With the London judge, the beautified faces' identity is
lost to sex changes (+1 sd turns men into women: London's crowd rates its women 0.7 points above its men),
not to the inversion (reconstruction identity 0.94). At weight 1, the default 9.5 minutes (1,640 steps
against 2,260; FaceNet's passes cost ~30 % of the step rate), on the same 32 test faces: FID 103 (67
without), beauty_spearman 0.53 (0.82), rise rate / identity at delta 1 0.59 / 0.88 (0.84 / 0.83), at
delta 2 0.47 / 0.86: G learns to hold the face by no longer changing it with beta. At weight 0.2 (1,560
steps): FID 79, beauty_spearman 0.80, rise / identity at delta 1 0.81 / 0.86, at delta 2 0.84 / 0.62 - the
same rise-identity frontier as without (0.84 / 0.83), so the term stays off.

Kept attributes (ours, `train.beholder.keep`, default [Male]; [] gives the paper's G(z, beta)): G also reads
CelebA's Male as -1 / +1 beside [z, c / sqrt(K)], D predicts it from a third head and E regresses it, with
lambda_kept x BCE for D on real faces, for G on its fakes (AC-GAN's term, Odena et al. 2017) and for E.
Beautification holds it: the inversion takes E's reading of the photo (start s of `starts` tries combination
s mod 2^A, and the best start is kept) and regenerates G(z, beta + delta, male). Strips hold it per row
(rows alternate women and men), each rising through its own sex's beauty levels (levels per combination of
kept values, so the beta asked is one the data pairs with that sex). Why: the London crowd rates its women
0.7 points above its men, so in G(z, beta) the direction of beauty carries sex, and +1 sd turned men into
women (the two Black men and the bearded man of the beautification grid, in every London-judged run);
dlib still verified most of them, so the identity figure did not show what the grid showed. With Male held,
beauty must rise through what the raters like within a sex. The default 9.5 minutes on 2 AVX512-bf16 cores,
the same 32 test faces and judge (without -> with Male kept): FID 64 -> 66, beauty_spearman 0.81 -> 0.80
(within z 0.86 -> 0.83), rise rate / identity at delta 0.5 0.81 / 0.94 -> 0.84 / 0.92, at delta 1
0.91 / 0.88 -> 0.81 / 0.89, at delta 2 0.94 / 0.69 -> 0.94 / 0.78; --residual at delta 1 identity
0.83 -> 0.92. In the grid the men stay men at +1 and +2 sd (beards and jaws kept) and the strips keep
their sex; the judge's beauty rises less per sd, because the cheapest way up its scale, feminising,
is closed.

Budget: 15 minutes (10 until the 3dac6d3 run; 5 of Fader's, which did not gain from them). Beautification's
rise-identity frontier moves with G's steps: on 32 test faces, 3,907 steps rise / identity at delta 1
0.84 / 0.86, the same checkpoint resumed to 10,658 steps 0.91 / 0.84 (beauty_spearman 0.80 -> 0.86); on
128 validation faces the 3,338-step model of 9f860ac reached 0.81 / 0.84 with the default tuning (60 steps
at 1.5e-3: 0.84 / 0.78; 80 at 1.25e-3: 0.81 / 0.80; 2.2 / 1.5 / 1.9 s a face: the cheaper tuning lost
identity, so the default stays). With 15 minutes' G the frontier moved toward rise, so the edit term's
weight was re-chosen on 256 validation faces (two draws of 128; the 56058c6 run's model, 6,217 steps): w 3
0.87 / 0.82 (first draw only), w 2 0.88 / 0.87, **w 2.5 (default) 0.88 / 0.87** (0.867 / 0.864 and
0.898 / 0.883): both figures at or above w 3's, so 2.5 (3 until then).
Cheaper tuning, so that more test faces fit evaluate@beholder's 90 s (it takes ~88 with 32; the tuning is
~39 of them), on the same 256 validation faces and model (rise / identity at delta 1, the mean of the two
draws; the tuning's ms a step for 32 faces on 2 AMX cores):
- default (blocks.0, the edit term every step):            0.88 / 0.87 (383);
- tune_from blocks.1:                                      0.89 / 0.85 (266);
- the edit term on every 2nd step at twice its weight:     0.88 / 0.85 (287);
- both:                                                    0.89 / 0.84 (193);
- tune_lr 1.5e-3 (same cost), w 2.5 / w 2:                 0.89 / 0.865, 0.89 / 0.88.
Each cheaper tuning lost 0.02-0.035 of identity, so the default stays and so does the 32-face test sample.
The 4x-minutes model (25,538 steps, README) on the same 256 validation faces: 0.94 / 0.89; on the 32 test
faces it gave 0.84 / 0.83.
The two G_x passes of a step in one vmap call (m images a grouped convolution) were no faster (344 against
358 ms); per-photo convolutions as unfold + bmm were 1.2x faster than vmap's grouped ones for the 256 -> 128
layer at 8 x 8 (1.4x slower with both passes) and 4-9x slower for every other layer.

Differences from the paper, for the CPU budget: 64 x 64 and a DCGAN/SNGAN with
the hinge loss instead of progressive growing to 128 x 128 with WGAN-GP; the
paper's beta came from SCUT-FBP5500 (60 raters, 5,500 faces), ours by default
from the London set (K = 60 of 2,513 raters, 102 faces). Inversion runs every
random start for the first fifth of the steps, then only the best start per
photo (the paper keeps one start; more starts guard against bad minima at a
fraction of the cost of running them all to the end).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegan.devices import bf16_autocast
from facegan.methods.base import (GANMethod, Metric, RequestError, TrainingData,
                                  TransformMethod, Transformed, adam, random_images, residual_composition, unwrap)
from facegan.methods.nets import Generator, down_trunk, signed, sn_linear, strided_layers
from facegan.metrics import binomial_se

QUANTILES = 101   # beauty bins whose mean beta vectors are kept with the weights, for strips
SELECTION_SHARE = 0.2
IDENTITY_SHIFT = 2.0  # the identity term raises beta by up to this many sd (beautification's largest delta)
INVERT_BOX = 3.0  # recovered standardised beta is clamped to [-3, 3]: where G has seen training data
BEAUTIFY_DELTAS = (0.5, 1.0, 2.0)   # beautification's table and figure: rise and identity per delta (sd)


class BeautyDiscriminator(nn.Module):
    """x -> (adversarial score, beta_hat in standardised units, logits of the A kept attributes)."""

    def __init__(self, k: int, width: int, size: int = 64, kept: int = 0):
        super().__init__()
        self.blocks, channels = down_trunk(width, size)
        self.adversarial = sn_linear(channels, 1)
        self.beauty = nn.Linear(channels, k)   # a regression head: its output scale must stay free
        self.kept = nn.Linear(channels, kept) if kept else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.blocks(x).sum((2, 3))
        kept = self.kept(h) if self.kept is not None else h.new_zeros(len(h), 0)
        return self.adversarial(h).squeeze(1), self.beauty(h), kept


class LatentEncoder(nn.Module):
    """x -> (z, c, logits of the A kept attributes): DCGAN's D body (instance norm, so a real photo is
    normalised as a fake is) from `size` to 4 x 4, then a linear layer to z_dim + K + A."""

    def __init__(self, z_dim: int, k: int, width: int, size: int = 64, kept: int = 0):
        super().__init__()
        blocks = int(round(torch.log2(torch.tensor(size / 4)).item()))
        layers, channels = strided_layers(width, blocks, norm="instance")
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(channels * 16, z_dim + k + kept)
        self.z_dim, self.k = z_dim, k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        code = self.head(self.body(x)).float()
        return code[:, :self.z_dim], code[:, self.z_dim:self.z_dim + self.k], code[:, self.z_dim + self.k:]


def quantile_medoids(labels: torch.Tensor) -> torch.Tensor:
    """(QUANTILES, K): row j is the REAL beta nearest the mean of the faces in the j-th of QUANTILES equal
    bins of the ensemble's beauty (the mean over raters), at least one face a bin."""
    order, n = labels.mean(1).argsort(), len(labels)
    medoids = []
    for j in range(QUANTILES):   # bin j: ranks [j n / Q, (j + 1) n / Q)
        members = order[min(j * n // QUANTILES, n - 1):max((j + 1) * n // QUANTILES, j * n // QUANTILES + 1)]
        centre = labels[members].mean(0)
        medoids.append(labels[members[(labels[members] - centre).norm(dim=1).argmin()]])
    return torch.stack(medoids)


class BeholderGAN(GANMethod, TransformMethod):
    """Generates faces from beauty vectors (`generate`) and beautifies photos (`transform`)."""
    name = "beholder"
    losses = ("loss_d_adv", "loss_d_beta", "loss_d_kept", "loss_g_adv", "loss_g_beta", "loss_g_kept", "loss_g_identity",
              "loss_e_z", "loss_e_c", "loss_e_kept")
    headline = (Metric("fid", "lower", "FID"), Metric("kid", "lower", "KID"),
                Metric("beauty_spearman", "higher", "beauty Spearman"),
                Metric("beautify_rise_rate", "higher"),
                Metric("identity_acc_beautified", "higher", "identity acc. / ceiling (dlib)", "identity_ceiling",
                       "beautified photos"))

    def __init__(self, params, common, image_size: int = 64):
        k, a = params.raters, len(params.keep)
        super().__init__(params, common, Generator(params.z_dim, k + a, params.g_width, image_size),
                         BeautyDiscriminator(k, params.d_width, image_size, a), image_size)
        self.E = (LatentEncoder(params.z_dim, k, params.encoder_width, image_size, a)
                  if params.encoder_width else None)
        self.kept_names = list(params.keep)
        self.condition_names = self.kept_names   # `facegan generate beholder --attr Male=1`
        self.root = None   # the project, for the beauty judge that beautification reads (setup)
        self._judge = None
        self.f = None      # FaceNet for the identity term (lambda_identity > 0), attached by setup; never saved
        self.register_buffer("beta_mean", torch.zeros(k))
        self.register_buffer("beta_std", torch.ones(k))
        self.register_buffer("beta_levels", torch.zeros(2 ** a, QUANTILES, k))   # per combination of kept values
        self.register_buffer("kept_share", torch.full((2 ** a,), 1.0 / 2 ** a))   # each combination's training share

    # ---------------------------------------------------------------- conditions
    def split_labels(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training labels (N, K + A) -> beta (N, K) in rating units and the kept attributes (N, A) in {0, 1}."""
        k, a = self.params.raters, len(self.kept_names)
        if labels.shape[1] != k + a:
            raise ValueError(f"beholder reads K = {k} beauty scores then {a} kept attributes "
                             f"({', '.join(self.kept_names) or 'none'}) per face; got {labels.shape[1]} columns")
        return labels[:, :k].float(), labels[:, k:].float()

    def combination(self, kept: torch.Tensor) -> torch.Tensor:
        """(N, A) kept values in {0, 1} -> (N,) the index of their combination, sum_j a_j 2^j."""
        return (kept.round().long() * 2 ** torch.arange(kept.shape[1], device=kept.device)).sum(1)

    def combination_values(self, index: torch.Tensor) -> torch.Tensor:
        """(N,) combination indices -> (N, A) kept values in {0, 1}."""
        return ((index[:, None] >> torch.arange(len(self.kept_names), device=index.device)) & 1).float()

    def prepare(self, labels):
        """Per-rater mean and std of beta; the kept attributes' combination shares; and for each
        combination beta_levels (quantile_medoids of its faces; all faces where it has none). Sweeping
        real rows keeps beta a vector the data holds: a bin mean, or every rater at one percentile,
        is far more central or extreme than any face's beta. Levels per combination: a strip of men
        rises through men's beauty, the asked beta being what the data pairs with men."""
        if labels is None:
            raise ValueError("beholder trains on beauty vectors: its training data gave none")
        beta, kept = self.split_labels(labels.float())
        self.beta_mean.copy_(beta.mean(0))
        self.beta_std.copy_(torch.nan_to_num(beta.std(0), nan=1.0).clamp_min(1e-3))
        combination = self.combination(kept)
        for j in range(len(self.beta_levels)):
            rows = combination == j
            self.kept_share[j] = rows.float().mean()
            self.beta_levels[j] = quantile_medoids(beta[rows] if rows.any() else beta)

    def g_condition(self, c: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """What G reads: [c / sqrt(K), kept as -1 / +1]. The K raters agree (r ~ 0.5), so c's first
        principal direction has std ~ sqrt(K / 2), ~5x any z direction: fed raw, it drowned z and G
        drew one face per beta (seen in training at K = 60). D's target stays c."""
        return torch.cat([c / self.params.raters ** 0.5, signed(kept.to(c.device))], 1)

    def kept_loss(self, logits: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """BCE of the kept attributes' logits (0 when nothing is kept)."""
        if not self.kept_names:
            return logits.new_zeros(())
        return F.binary_cross_entropy_with_logits(logits.float(), kept)

    def standardise(self, beta: torch.Tensor) -> torch.Tensor:
        return (beta.float() - self.beta_mean) / self.beta_std

    def levels(self, n: int, combination: int = 0, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
        """(n, K) real beta vectors of rising beauty, at beauty quantiles low..high of the faces with
        that combination of kept values (combination_values)."""
        return self.beta_levels[combination][(torch.linspace(low, high, n) * (QUANTILES - 1)).round().long()]

    # ---------------------------------------------------------------- training
    def trainable(self):
        return {**super().trainable(), **({"E": self.E} if self.E is not None else {})}

    def configure_optimizers(self):
        optimizers = super().configure_optimizers()
        if self.E is not None:
            optimizers["E"] = adam(unwrap(self.E).parameters(), self.params.lr_e)
        return optimizers

    def train_step(self, batch, step, generator):
        x_real = batch["image"]
        beta_real, kept_real = self.split_labels(batch["attributes"])
        c_real = self.standardise(beta_real)
        n, device = len(x_real), x_real.device
        other = torch.randperm(n, generator=generator).to(device)   # another real face's (beta, kept): joint
        c_fake, kept_fake = c_real[other], kept_real[other]
        z = torch.randn(n, self.params.z_dim, generator=generator).to(device)
        lambda_beta, lambda_kept, opt = self.params.lambda_beta, self.params.lambda_kept, self.optimizers

        # ---------------- 1. discriminator: real/fake hinge + predict beta (and the kept attributes) of real faces
        with torch.no_grad():
            x_fake = self.G(z, self.g_condition(c_fake, kept_fake))
        score_real, beta_hat_real, kept_hat_real = self.D(self.seen_by_d(x_real, generator))
        score_fake, _, _ = self.D(self.seen_by_d(x_fake, generator))
        loss_d_adv = F.relu(1 - score_real).mean() + F.relu(1 + score_fake).mean()
        loss_d_beta = F.mse_loss(beta_hat_real.float(), c_real)
        loss_d_kept = self.kept_loss(kept_hat_real, kept_real)
        opt["D"].zero_grad(set_to_none=True)
        (loss_d_adv + lambda_beta * loss_d_beta + lambda_kept * loss_d_kept).backward()
        opt["D"].step()

        # ---------------- 2. generator: fool D, and make D read the requested beta and kept attributes
        x_g = self.G(z, self.g_condition(c_fake, kept_fake))
        score, beta_hat, kept_hat = self.D(self.seen_by_d(x_g, generator))
        loss_g_adv = -score.mean()
        loss_g_beta = F.mse_loss(beta_hat.float(), c_fake)
        loss_g_kept = self.kept_loss(kept_hat, kept_fake)
        loss_g_identity = self.identity_loss(x_g, z, c_fake, kept_fake, generator, step)
        opt["G"].zero_grad(set_to_none=True)
        (loss_g_adv + lambda_beta * loss_g_beta + lambda_kept * loss_g_kept
         + self.params.lambda_identity * loss_g_identity).backward()
        opt["G"].step()

        # ---------------- 3. encoder: (z, c', kept') back from the D step's fakes (latent regression)
        losses_e = {"loss_e_z": float("nan"), "loss_e_c": float("nan"), "loss_e_kept": float("nan")}
        if self.E is not None:
            z_hat, c_hat, kept_logits = self.E(x_fake)
            loss_e_z, loss_e_c = F.mse_loss(z_hat, z), F.mse_loss(c_hat, c_fake)
            loss_e_kept = self.kept_loss(kept_logits, kept_fake)
            opt["E"].zero_grad(set_to_none=True)
            (loss_e_z + loss_e_c + loss_e_kept).backward()
            opt["E"].step()
            losses_e = {"loss_e_z": loss_e_z.item(), "loss_e_c": loss_e_c.item(), "loss_e_kept": loss_e_kept.item()}
        return {"loss_d_adv": loss_d_adv.item(), "loss_d_beta": loss_d_beta.item(), "loss_d_kept": loss_d_kept.item(),
                "loss_g_adv": loss_g_adv.item(), "loss_g_beta": loss_g_beta.item(), "loss_g_kept": loss_g_kept.item(),
                "loss_g_identity": loss_g_identity.item(), **losses_e}

    def identity_loss(self, x_g: torch.Tensor, z: torch.Tensor, c: torch.Tensor, kept: torch.Tensor, generator,
                      step: int = 0) -> torch.Tensor:
        """The person kept along beta (ours; the paper has no such term): for the first `identity_samples`
        fakes, ||f(G(z, c + d)) - f(G(z, c))||^2 with f FaceNet's unit embedding (the fixed side detached),
        every rater raised by d ~ U(0, IDENTITY_SHIFT) sd - the deltas beautification uses. Without it the
        direction of beauty in G carries the raters' taste for one sex (London's crowd rates its women 0.7
        points above its men), and beautification at +1 sd turns men into women. FaceNet's passes cost more
        than the rest of a step (img/s 120 -> 45 at 8 samples), so the term runs every `identity_every` steps."""
        # (step + 1): the steps whose losses are logged (every log_every-th) are among those it runs on
        if not self.params.lambda_identity or (step + 1) % self.params.identity_every:
            return torch.zeros((), device=x_g.device)
        if self.f is None:
            raise RuntimeError("beholder's identity term needs FaceNet: call setup(root, device) first")
        m = min(self.params.identity_samples, len(z))
        shift = IDENTITY_SHIFT * torch.rand(m, 1, generator=generator).to(c.device)
        raised = self.G(z[:m], self.g_condition(c[:m] + shift, kept[:m]))
        with torch.no_grad():
            anchor = self.f(x_g[:m].detach()).float()
        return (self.f(raised).float() - anchor).pow(2).sum(1).mean()

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, conditions: torch.Tensor, z: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Faces for beauty vectors beta (N, K) in rating units, followed by the kept attributes' values
        (N, K + A); with beta alone each face's kept values are drawn at their training shares."""
        if z is None:
            z = torch.randn(len(conditions), self.params.z_dim, generator=generator)
        k = self.params.raters
        if conditions.shape[1] == k and self.kept_names:
            drawn = torch.multinomial(self.kept_share.cpu(), len(conditions), replacement=True, generator=generator)
            conditions = torch.cat([conditions, self.combination_values(drawn)], 1)
        beta, kept = self.split_labels(conditions.to(self.device()))
        return self.G_ema.eval()(z.to(self.device()), self.g_condition(self.standardise(beta), kept))

    def strip_conditions(self, rows: int, levels: int, combination: int | None = None) -> torch.Tensor:
        """(rows * levels, K + A): row r holds combination r mod 2^A of the kept values (with Male kept:
        women, men, women, ...), or every row `combination`, its beta rising through that combination's
        beauty levels."""
        combination = (torch.arange(rows) % len(self.beta_levels) if combination is None
                       else torch.full((rows,), combination))
        beta = torch.cat([self.levels(levels, int(j)) for j in combination]).cpu()
        return torch.cat([beta, self.combination_values(combination).repeat_interleave(levels, 0)], 1)

    def strips(self, z: torch.Tensor, levels: int) -> torch.Tensor:
        """(len(z) * levels, 3, H, W): row r is z[r] with beta rising through the levels (strip_conditions)."""
        return self.generate(self.strip_conditions(len(z), levels), z.repeat_interleave(levels, 0))

    def sample_grid(self, generator):
        """8 fixed z (rows) x 8 beta levels from the 5th to the 95th percentile (columns)."""
        return self.strips(torch.randn(8, self.params.z_dim, generator=generator), 8)

    def sample_sheet(self, n, values, levels, generator):
        """n rows of one z each, beauty rising along the row through `levels` levels; `values` sets the
        kept attributes of every row (0 or 1; those not given 0), else the rows alternate (strip_conditions)."""
        z = torch.randn(n, self.params.z_dim, generator=generator)
        what = f"{n} faces (rows), each at {levels} beauty levels from the 5th to the 95th percentile (left to right)"
        if not values:
            alternating = f"; rows alternate {', '.join(self.kept_names)} 0 and 1" if self.kept_names else ""
            return self.strips(z, levels), levels, what + alternating
        if any(v not in (0.0, 1.0) for v in values.values()):
            raise RequestError(f"{self.name} holds {', '.join(self.kept_names)} at 0 or 1: got "
                               + ", ".join(f"{k}={v:g}" for k, v in values.items()))
        kept = torch.tensor([[values.get(name, 0.0) for name in self.kept_names]])
        conditions = self.strip_conditions(n, levels, int(self.combination(kept)[0]))
        held = ", ".join(f"{name}={int(v)}" for name, v in zip(self.kept_names, kept[0]))
        return self.generate(conditions, z.repeat_interleave(levels, 0)), levels, f"{what}; {held}"

    # ---------------------------------------------------------------- beautification
    def invert(self, photos: torch.Tensor, facenet, generator: torch.Generator, inversion,
               on_step=None) -> dict[str, torch.Tensor]:
        """Recover (z, c) with G_ema(z, c, kept) ~ photos (N, 3, H, W in [-1, 1]); c is beta standardised.

        Adam on alpha * pixel MSE + (1 - alpha) * squared FaceNet embedding distance,
        from `starts` (z0, c0) per photo: the first E(photo) with `inversion.init` "encoder", the
        others random; after a fifth of the steps only the start with the lowest loss goes on
        (`inversion`: config.InversionParams, steps, starts, lr, alpha). The kept attributes are not
        searched by gradient: the first start takes E's reading of the photo, start s the combination
        s mod 2^A, and the selection keeps the best. Returns z, c, kept, beta and the final loss (N,)."""
        p = self.params
        steps, starts = inversion.steps, inversion.starts
        device, n = self.device(), len(photos)
        photos = photos.to(device).float()
        with torch.no_grad():
            target = facenet(photos)
        z = torch.randn(n * starts, p.z_dim, generator=generator).to(device)
        c = torch.randn(n * starts, p.raters, generator=generator).to(device)
        kept = self.combination_values(torch.arange(starts, device=device) % len(self.beta_levels)).repeat(n, 1)
        if inversion.init == "encoder":
            if self.E is None:
                raise RequestError("this Beholder-GAN was trained without an encoder (train.beholder.encoder_width: "
                                   "0): invert from random starts (inversion init: random)")
            with torch.no_grad():
                z_e, c_e, kept_e = self.E.eval()(photos)
            first = torch.arange(n, device=device) * starts
            z[first], c[first] = z_e.float(), c_e.float().clamp(-INVERT_BOX, INVERT_BOX)
            kept[first] = (kept_e.float() > 0).float()
        index = torch.arange(n, device=device).repeat_interleave(starts)
        G = self.G_ema.eval().requires_grad_(False)
        select_at = max(1, int(steps * SELECTION_SHARE))

        def losses(z, c, kept, index):
            fake = G(z, self.g_condition(c, kept)).float()
            pixel = (fake - photos[index]).pow(2).flatten(1).mean(1)
            feature = (facenet(fake) - target[index]).pow(2).sum(1)
            return inversion.alpha * pixel + (1 - inversion.alpha) * feature

        def best_start(z, c, kept, index):
            with torch.no_grad():
                best = losses(z, c, kept, index).view(n, starts).argmin(1) + torch.arange(n, device=device) * starts
            return z.detach()[best].requires_grad_(), c.detach()[best].requires_grad_(), kept[best], index[best]

        z, c = z.requires_grad_(), c.requires_grad_()
        optimizer = torch.optim.Adam([z, c], lr=inversion.lr)
        for step in range(steps):
            if step == select_at and starts > 1:
                z, c, kept, index = best_start(z, c, kept, index)
                optimizer = torch.optim.Adam([z, c], lr=inversion.lr)
            loss = losses(z, c, kept, index)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            with torch.no_grad():
                c.clamp_(-INVERT_BOX, INVERT_BOX)
            if on_step:
                on_step(step)
        if len(z) > n:   # fewer steps than the selection point: choose now
            z, c, kept, index = best_start(z, c, kept, index)
        with torch.no_grad():
            final = losses(z, c, kept, torch.arange(n, device=device))
        z, c = z.detach(), c.detach()
        tuned = (self.pivotal_tuning(photos, z, c, kept, inversion, facenet, target) if inversion.tune_steps
                 else None)
        return {"z": z, "c": c, "kept": kept, "beta": c * self.beta_std + self.beta_mean, "loss": final,
                "tuned": tuned}

    def tune_layers(self) -> list[str]:
        """G's layers in order, the values of `inversion.tune_from`."""
        return ["fc", *(f"blocks.{k}" for k in range(len(self.G_ema.blocks))), "out"]

    def tunable(self, tune_from: str = "fc") -> list[str]:
        """G's weights pivotal tuning may move: those of layer `tune_from` and every later one (`out`: the
        output norm and convolution), but never the conditional norms' maps of [z, c], so that beta acts
        on a tuned G through the same scale and shift as on G."""
        layers = self.tune_layers()
        if tune_from not in layers:
            raise RequestError(f"inversion tune_from {tune_from!r}: expected one of {', '.join(layers)}")
        later = set(layers[layers.index(tune_from):])

        def layer(name):   # blocks.2.conv.weight -> blocks.2; out_norm.weight and out.bias -> out
            parts = name.split(".")
            return ".".join(parts[:2]) if parts[0] == "blocks" else "out" if parts[0].startswith("out") else parts[0]
        return [name for name, _ in self.G_ema.named_parameters() if ".norm." not in name and layer(name) in later]

    def frozen_prefix(self, tuned: dict, z: torch.Tensor, condition: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """(k, x): the first up-block whose weights are tuned and G's activation entering it, the same for
        every copy (k = -1, x None: fc itself is tuned and every copy runs from [z, c])."""
        if "fc.weight" in tuned:
            return -1, None
        G = self.G_ema.eval()
        first = min((int(name.split(".")[1]) for name in tuned if name.startswith("blocks.")), default=len(G.blocks))
        with torch.no_grad():
            x, _ = G.head(z, condition, first)
        return first, x.float()

    def tuned_forward(self, tuned: dict[str, torch.Tensor], z: torch.Tensor, condition: torch.Tensor,
                      prefix: tuple[int, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Photo i through its own weights tuned[name][i] (the rest of G_ema shared); the layers before the
        first tuned one run once for all copies (`prefix`: frozen_prefix's result, computed if None)."""
        from torch.func import functional_call, vmap

        G = self.G_ema.eval()
        first, x = prefix if prefix is not None else self.frozen_prefix(tuned, z, condition)
        shared = {**{k: v for k, v in G.named_parameters() if k not in tuned}, **dict(G.named_buffers())}
        if first < 0:
            def one(weights, z, condition):
                return functional_call(G, {**shared, **weights}, (z[None], condition[None]))[0]
            return vmap(one)(tuned, z, condition)
        decoder = DecodeFrom(G, first)
        shared = {f"G.{k}": v for k, v in shared.items()}

        def one_from(weights, x, z, condition):
            cond = torch.cat([z, condition])[None]
            return functional_call(decoder, {**shared, **{f"G.{k}": v for k, v in weights.items()}}, (x[None], cond))[0]
        return vmap(one_from)(tuned, x, z, condition)

    def pivotal_tuning(self, photos: torch.Tensor, z: torch.Tensor, c: torch.Tensor, kept: torch.Tensor,
                       inversion, facenet=None, target: torch.Tensor | None = None) -> dict:
        """Pivotal tuning (Roich et al. 2021, PTI): with the recovered (z, c) and kept values fixed as the
        pivot, Adam moves a copy of G's weights per photo for `tune_steps` on the pixel MSE ||x - G_x(z, c)||^2, so that G_x draws
        this person; beautification is then G_x(z, c + delta). PTI's loss is L2 + LPIPS with a locality
        term; LPIPS's weights are not obtainable offline: with `tune_feature` the perceptual term is the
        inversion's own, w ||f(G_x(z, c)) - f(x)||^2 on FaceNet's embedding (`facenet`, `target` = f(x)). PTI
        tunes all of G; here the layers from `tune_from` on, and never the conditional norms' maps (`tunable`);
        with `tune_edit`, the edit term too."""
        condition = self.g_condition(c, kept)
        names = self.tunable(inversion.tune_from)
        weights = dict(self.G_ema.named_parameters())
        tuned = {k: weights[k].detach().float().expand(len(photos), *weights[k].shape).clone().requires_grad_()
                 for k in names}
        if inversion.tune_feature and (facenet is None or target is None):
            raise RequestError("inversion tune_feature needs FaceNet and f(photos): pass facenet and target")
        prefix = self.frozen_prefix(tuned, z, condition)
        optimizer = adam(tuned.values(), inversion.tune_lr)
        if inversion.tune_edit:
            with torch.no_grad():
                pivot = self.G_ema.eval()(z, condition).float()
            edits = torch.Generator().manual_seed(0)    # the edit term's d, the same for every run
        for _ in range(inversion.tune_steps):
            drawn = self.tuned_forward(tuned, z, condition, prefix).float()
            loss = (drawn - photos).pow(2).mean((1, 2, 3)).sum()
            if inversion.tune_feature:
                loss = loss + inversion.tune_feature * (facenet(drawn) - target).float().pow(2).sum()
            if inversion.tune_edit:
                d = 2 * torch.rand(len(z), 1, generator=edits).to(z.device)
                raised = self.g_condition(c + d, kept)
                loss = loss + inversion.tune_edit * self.edit_loss(tuned, z, raised, drawn, pivot)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return {k: v.detach() for k, v in tuned.items()}

    def edit_loss(self, tuned: dict, z: torch.Tensor, raised: torch.Tensor, drawn: torch.Tensor,
                  pivot: torch.Tensor) -> torch.Tensor:
        """The edit term (ours; PTI's locality regulariser applied along beta): the tuned G's change under
        beta + d keeps G's, ||(G_x(z, c + d) - G_x(z, c)) - (G(z, c + d) - G(z, c))||^2 (pixel mean per
        photo, summed), with raised = g_condition(c + d, kept), d in sd of every rater (pivotal_tuning draws
        U(0, 2) per photo and step), drawn = G_x(z, c), pivot = G(z, c)."""
        with torch.no_grad():
            target = self.G_ema.eval()(z, raised).float() - pivot
        moved = self.tuned_forward(tuned, z, raised).float() - drawn
        return (moved - target).pow(2).mean((1, 2, 3)).sum()

    @torch.no_grad()
    def regenerate(self, recovered: dict, delta: float) -> torch.Tensor:
        """G(z, beta + delta * sigma, kept) of an inversion's result: every rater's score raised by `delta` of
        that rater's std, the kept attributes held; each photo through its tuned weights where pivotal tuning
        ran (delta 0: the reconstruction)."""
        beta = recovered["beta"] + delta * self.beta_std
        if recovered.get("tuned") is None:
            return self.generate(torch.cat([beta, recovered["kept"]], 1), recovered["z"])
        condition = self.g_condition(self.standardise(beta.to(self.device())), recovered["kept"])
        return self.tuned_forward(recovered["tuned"], recovered["z"].to(self.device()), condition)

    def setup(self, root, device) -> None:
        self.root = root
        if self.params.lambda_identity:
            self.attach_facenet(root, device)

    def judge(self):
        """The per-rater ensemble (models/beauty) with FaceNet: beautification inverts through FaceNet
        and reports the ensemble's beauty. Loaded on first use; a missing model names its stage."""
        if self._judge is None:
            from facegan.beauty.judge import BeautyJudge

            if self.root is None:
                raise RuntimeError("beholder.judge needs the project: call setup(root) (load_trained does)")
            self._judge = BeautyJudge(self.root, self.device())
            if len(self._judge.ensemble.raters) != self.params.raters:
                from facegan.data.quality import DataError
                raise DataError(f"models/beauty has {len(self._judge.ensemble.raters)} raters but models/beholder "
                                f"was trained with K = {self.params.raters}: set beauty.raters and "
                                "train.beholder.raters equal and re-run")
        return self._judge

    def transform(self, crops, delta: float = 1.0, inversion=None, generator: torch.Generator | None = None):
        """Beautification: recover (z, beta) of each crop (`inversion`: config.InversionParams), regenerate
        at beta + delta sd. Panels: the reconstruction G(z, beta)."""
        if inversion is None:
            from facegan.config import InversionParams
            inversion = InversionParams()
        judge = self.judge()
        generator = generator or torch.Generator().manual_seed(0)
        crops = crops.float()
        with bf16_autocast(self.device()):
            recovered = self.invert(crops, judge.facenet, generator, inversion)
        beautified = self.regenerate(recovered, delta).float().cpu()
        reconstruction = self.regenerate(recovered, 0.0).float().cpu()
        before, recon, after = (judge.beauty(x) for x in (crops, reconstruction, beautified))
        held = [", ".join(f"{name} {int(v)}" for name, v in zip(self.kept_names, row)) for row in recovered["kept"]]
        notes = [f"predicted beauty: photo {b:.2f}, reconstruction {r:.2f}, beautified {a:.2f} (every rater "
                 f"{delta:+g} sd{'; held: ' + h if h else ''})" for b, r, a, h in zip(before, recon, after, held)]
        return Transformed(beautified, {"reconstruction": reconstruction}, notes)

    # ---------------------------------------------------------------- data and evaluation
    @staticmethod
    def training_data(root, params) -> TrainingData:
        """Aligned CelebA train faces with their pseudo beta and kept attributes (K + A columns), plus
        (london_real) the rating set's train faces with their real ratings."""
        from facegan.data.datasets import load_images, set_folder

        images, frame = load_images(set_folder(root, "celeba"), ["train"])
        labels = BeholderGAN.celeba_conditions(root, params, frame)
        if params.london_real:
            extra, extra_labels = BeholderGAN.rated_faces(root, params)
            images, labels = np.concatenate([images, extra]), np.concatenate([labels, extra_labels])
        return TrainingData(images, labels)

    @staticmethod
    def celeba_conditions(root, params, frame) -> np.ndarray:
        """(N, K + A) of the CelebA manifest rows `frame`: their pseudo beta, then their kept attributes."""
        from facegan.config import ConfigError
        from facegan.data.pseudo_labels import load_pseudo_labels

        pseudo = load_pseudo_labels(root, "celeba")
        if pseudo["beta"].shape[1] != params.raters:
            raise ConfigError(f"train.beholder.raters = {params.raters}, but data/pseudo_labels has K = "
                              f"{pseudo['beta'].shape[1]} raters (beauty.raters): set them equal")
        row = {path: i for i, path in enumerate(pseudo["path"])}
        missing = [p for p in frame["path"] if p not in row]
        if missing:
            raise FileNotFoundError(f"{len(missing)} aligned CelebA faces have no pseudo-label (first: {missing[0]}):"
                                    " run `dvc repro pseudo_label`")
        absent = [name for name in params.keep if name not in frame.columns]
        if absent:
            raise ConfigError(f"train.beholder.keep: the CelebA manifest has no attribute {absent[0]!r}")
        beta = pseudo["beta"][[row[p] for p in frame["path"]]]
        return np.concatenate([beta, frame[list(params.keep)].to_numpy(np.float32)], 1).astype(np.float32)

    @staticmethod
    def rated_faces(root, params) -> tuple[np.ndarray, np.ndarray]:
        """The rating set's train faces and their REAL ratings, then their kept attributes: Male from the
        set's own face_sex (London) or sex column; no other attribute is known for them."""
        from facegan.config import ConfigError
        from facegan.data.datasets import read_image_set, rows_of, set_folder
        from facegan.data.pseudo_labels import load_pseudo_labels

        real = load_pseudo_labels(root, "real")
        train = real["split"] == "train"
        rated, rated_frame = read_image_set(set_folder(root, str(real["set"])))
        rows = rows_of(rated_frame, real["path"][train].astype(str))
        kept = []
        for name in params.keep:
            column = next((c for c in ("face_sex", "sex") if c in rated_frame), None)
            if name != "Male" or column is None:
                raise ConfigError(f"train.beholder.keep has {name!r}, which the rating set {real['set']} does not "
                                  "label: set train.beholder.london_real: false, or keep only Male")
            sex = rated_frame[column].iloc[rows].astype(str).str.lower()
            unknown = sorted(set(sex) - {"male", "female"})
            if unknown:
                raise ConfigError(f"{real['set']}'s {column} has {unknown[0]!r} (expected male or female)")
            kept.append((sex == "male").to_numpy(np.float32))
        labels = np.concatenate([real["beta"][train], np.stack(kept, 1) if kept else np.zeros((len(rows), 0))], 1)
        return rated[rows], labels.astype(np.float32)

    @staticmethod
    def synthetic_data(params, n, image_size, seed=0) -> TrainingData:
        rng = np.random.default_rng(seed)
        images = random_images(rng, n, image_size)
        labels = np.concatenate([rng.uniform(1, 7, (n, params.raters)), rng.integers(0, 2, (n, len(params.keep)))], 1)
        return TrainingData(images, labels.astype(np.float32))

    def evaluate(self, context) -> dict:
        """FID/KID; beauty control (beauty_spearman) and identity along strips;
        beautification of held-out CelebA test faces (beauty rise, identity)."""
        from facegan.data.datasets import set_folder
        from facegan.data.manifest import read_manifest
        from facegan.metrics.beauty import beauty_control, strip_identity

        settings, own = context.shared, context.own
        judge = self.judge()
        generator = torch.Generator().manual_seed(settings.seed)

        # ---------------- 1. FID/KID: (beta, kept) drawn from the training distribution of pseudo-labels
        frame = read_manifest(set_folder(context.root, "celeba"))
        train = self.celeba_conditions(context.root, self.params, frame[frame["split"] == "train"])
        rng = np.random.default_rng(settings.seed)
        requested = torch.from_numpy(train[rng.integers(len(train), size=settings.n_samples)])
        fakes = torch.cat([self.generate(chunk, generator=generator).float().cpu()
                           for chunk in requested.split(settings.batch_size)])
        result = context.fid_kid(fakes, ("celeba", "test"))

        # ---------------- 2. beauty control and identity along strips (strip_conditions: each row its own
        # combination of kept values, so `asked` is per row)
        z = torch.randn(own.strips, self.params.z_dim, generator=generator).repeat_interleave(own.levels, 0)
        conditions = self.strip_conditions(own.strips, own.levels)
        strips = torch.cat([self.generate(c, zz).float().cpu()
                            for c, zz in zip(conditions.split(settings.batch_size), z.split(settings.batch_size))])
        asked = conditions[:, :self.params.raters].mean(1).view(own.strips, own.levels).numpy()
        result.update(beauty_control(asked, judge.beauty(strips).reshape(own.strips, own.levels)))
        result.update(strip_identity(judge.dlib(strips).reshape(own.strips, own.levels, -1)))
        context.save_grid(strips[:8 * own.levels], [f"z{r}" for r in range(min(8, own.strips))],
                          "beauty_strips.png", per_row=own.levels)

        # ---------------- 3. beautification of held-out faces
        result.update(self.evaluate_beautification(context, generator))
        return result

    def evaluate_beautification(self, context, generator) -> dict:
        import pandas as pd

        from facegan.data.datasets import load_images, set_folder, to_tensor
        from facegan.metrics.pixels import psnr

        own = context.own
        images, frame = load_images(set_folder(context.root, "celeba"), ["test"])
        check = context.identity_check(frame["path"], own.beautify_faces)
        photos = to_tensor(images[check.chosen])
        judge = self.judge()
        with bf16_autocast(self.device()):
            recovered = self.invert(photos, judge.facenet, generator, own.inversion)
        reconstruction = self.regenerate(recovered, 0.0).float().cpu()
        beauty_photo, beauty_recon = judge.beauty(photos), judge.beauty(reconstruction)
        recon = check(reconstruction)
        deltas = sorted({*BEAUTIFY_DELTAS, float(own.delta)})
        beautified, residual, table = {}, {}, []
        for delta in deltas:
            beautified[delta] = self.regenerate(recovered, delta).float().cpu()
            # `--residual` (ours): the photo plus G's change, photo + G(z, beta + delta) - G(z, beta)
            residual[delta] = residual_composition(photos, beautified[delta], reconstruction)[0]
            beauty, beauty_residual = judge.beauty(beautified[delta]), judge.beauty(residual[delta])
            identity = check(beautified[delta])
            rise = float((beauty > beauty_photo).mean())
            table.append({"delta": delta, "rise_rate": rise,
                          "rise_rate_se": binomial_se(rise, len(photos)),
                          "rise_rate_vs_reconstruction": float((beauty > beauty_recon).mean()),
                          "beauty": float(beauty.mean()), **identity,
                          "rise_rate_residual": float((beauty_residual > beauty_photo).mean()),
                          "identity_acc_residual": check(residual[delta])["identity_acc"]})
        table = pd.DataFrame(table)
        table.to_csv(context.report_dir / "beautify_by_delta.csv", index=False)
        plot_beautify_by_delta(table, recon["identity_acc"], context.report_dir / "beautify_by_delta.png")
        rows = ["photo", "reconstruction", *(f"beta + {d:g} sd" for d in deltas), f"residual, + {own.delta:g} sd"]
        context.save_grid(torch.cat([photos[:8], reconstruction[:8], *(beautified[d][:8] for d in deltas),
                                     residual[float(own.delta)][:8]]), rows,
                          "beautification.png", per_row=min(8, len(photos)))
        by_delta = table.set_index("delta")
        at = by_delta.loc[float(own.delta)]
        return {
            "beautify_faces": check.faces, "beautify_delta": own.delta,
            "beautify_rise_rate": float(at["rise_rate"]), "beautify_rise_rate_se": float(at["rise_rate_se"]),
            "beautify_rise_rate_vs_reconstruction": float(at["rise_rate_vs_reconstruction"]),
            "beautify_beauty_photo": float(beauty_photo.mean()),
            "beautify_beauty_reconstruction": float(beauty_recon.mean()),
            "beautify_beauty_beautified": float(at["beauty"]),
            "reconstruction_psnr": float(psnr(reconstruction, photos).mean()),
            "inversion_loss": float(recovered["loss"].mean()),
            "identity_acc_beautified": float(at["identity_acc"]),
            "identity_acc_beautified_se": float(at["identity_acc_se"]),
            "identity_acc_reconstruction": recon["identity_acc"],
            "identity_ceiling": recon["identity_ceiling"],
            "identity_acc_beautified_at_fixed": float(at["identity_acc_at_fixed"]),
            "identity_acc_reconstruction_at_fixed": recon["identity_acc_at_fixed"],
            "identity_ceiling_at_fixed": recon["identity_ceiling_at_fixed"],
            "identity_pairs": recon["identity_pairs"],
            "beautify_rise_rate_by_delta": {f"{d:g}": float(v) for d, v in by_delta["rise_rate"].items()},
            "identity_acc_beautified_by_delta": {f"{d:g}": float(v) for d, v in by_delta["identity_acc"].items()},
            "beautify_rise_rate_residual": float(at["rise_rate_residual"]),
            "identity_acc_beautified_residual": float(at["identity_acc_residual"]),
        }


class DecodeFrom(nn.Module):
    """G from the activation entering up-block `first` (Generator.decode), as a module for functional_call."""

    def __init__(self, G, first: int):
        super().__init__()
        self.G, self.first = G, first

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.G.decode(x, condition, self.first)


def plot_beautify_by_delta(table, identity_reconstruction: float, path) -> None:
    """Beautification against delta: the share of photos whose predicted beauty rises, and dlib's
    verification accuracy of (photo, beautified), beside the reconstruction's and the ceiling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facegan.reports import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(table["delta"], table["rise_rate"], yerr=table["rise_rate_se"], fmt="o-", capsize=3,
                label="predicted beauty rises (share of photos; +- 1 standard error)")
    ax.errorbar(table["delta"], table["identity_acc"], yerr=table["identity_acc_se"], fmt="s-", capsize=3,
                label="identity acc. (photo, beautified), dlib")
    ax.plot(table["delta"], table["rise_rate_residual"], "o:", label="predicted beauty rises, --residual (photo + change)")
    ax.plot(table["delta"], table["identity_acc_residual"], "s:", label="identity acc., --residual")
    ax.axhline(identity_reconstruction, color="grey", ls="--", label="identity acc. (photo, reconstruction)")
    ax.axhline(float(table["identity_ceiling"].iloc[0]), color="black", ls=":", label="identity ceiling")
    ax.set_xlabel("delta: every rater's beta raised by delta standard deviations")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    save_figure(fig, path)
