"""Typed parameters: params.yaml -> frozen dataclasses, one section per stage.

Every key is checked when it is read: an unknown key, a value of the wrong type
or one out of range raises `ConfigError` naming the dotted key and what is
allowed, so a typo in `dvc exp run -S ...` fails before any work starts.
Keys left out of params.yaml take the defaults below.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from facegan.paths import project_root


class ConfigError(ValueError):
    """A params key is unknown, of the wrong type, or out of range."""


def bounded(default, lo=None, hi=None):
    """A field with an inclusive range checked by the loader."""
    return field(default=default, metadata={"min": lo, "max": hi})


def listed(default, choices):
    """A list field whose items must be among `choices`."""
    return field(default_factory=lambda: list(default), metadata={"choices": tuple(choices)})


# ---------------------------------------------------------------- sections

@dataclass(frozen=True)
class SplitParams:
    """Fractions of identities per split; identity-disjoint, seeded."""
    train: float = bounded(0.8, 0.0, 1.0)
    val: float = bounded(0.1, 0.0, 1.0)
    test: float = bounded(0.1, 0.0, 1.0)

    def check(self, key: str) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"{key}: train + val + test must sum to 1, got {total:g}")


@dataclass(frozen=True)
class SourceParams:
    """One public release inside the mirror."""
    folder: str = ""
    max_images: int = bounded(0, 0)  # 0 = every image of the release
    split: SplitParams = field(default_factory=SplitParams)


DATASETS = ("celeba", "london", "umist", "emoji", "scut")
IMAGE_SETS = DATASETS + ("avatars",)
LANDMARK_GROUPS = ("jaw", "brows", "nose", "eyes", "mouth")   # parts of the 68-point layout (faces/pose.py)
SPLITS = ("train", "val", "test")
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")


def check_device(key: str, device: str) -> None:
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"{key}.device: expected 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


@dataclass(frozen=True)
class DataParams:
    mirror: str = "../shared/datasets"
    seed: int = bounded(0, 0)


@dataclass(frozen=True)
class IngestParams:
    sets: list[str] = listed(["celeba", "london", "umist", "emoji"], DATASETS)
    # A set whose kept/read fraction falls below this fails the stage.
    min_kept_fraction: float = bounded(0.3, 0.0, 1.0)
    celeba: SourceParams = field(default_factory=lambda: SourceParams(folder="celeba"))
    london: SourceParams = field(default_factory=lambda: SourceParams(folder="london"))
    umist: SourceParams = field(default_factory=lambda: SourceParams(folder="umist"))
    emoji: SourceParams = field(default_factory=lambda: SourceParams(folder="emoji"))
    scut: SourceParams = field(default_factory=lambda: SourceParams(folder="SCUT-FBP5500"))


@dataclass(frozen=True)
class RenderAvatarsParams:
    n: int = bounded(2000, 1, 1_000_000)
    size: int = bounded(64, 16, 1024)
    seed: int = bounded(0, 0)
    workers: int = bounded(2, 1, 256)
    split: SplitParams = field(default_factory=SplitParams)


DETECTORS = ("hog", "cnn", "median_box")


@dataclass(frozen=True)
class AlignSetParams:
    """How one set is cropped.

    mode `landmarks`: similarity transform of the 68 landmarks onto the template.
    mode `dataset_crop`: keep the release's own tight crop (padded square,
    resized) and record landmarks where a detector finds the face; for profile
    views (UMIST) that defeat frontal detectors.
    detectors are tried in order; `median_box` places the shape predictor in the
    median box of this set's detected faces (valid for releases that are
    already roughly aligned, like CelebA's img_align_celeba).
    box_sample: with `median_box` listed, run the real detectors on a seeded
    sample of this many images only, and place every other image's landmarks in
    the sample's median box (0 = detect on every image). For a release whose
    faces all sit in one place, this saves the detector's ~30 ms an image.
    """
    mode: Literal["landmarks", "dataset_crop"] = "landmarks"
    detectors: list[str] = listed(["hog"], DETECTORS)
    box_sample: int = bounded(0, 0)


@dataclass(frozen=True)
class AlignParams:
    size: int = bounded(64, 16, 1024)
    backend: Literal["dlib", "face_alignment"] = "dlib"
    device: str = "auto"
    workers: int = bounded(2, 1, 256)
    # Detection runs on a copy whose short side is this many pixels: CelebA's
    # half-resolution faces (~40 px) grow past HOG's 80-px window, London's shrink.
    detect_side: int = bounded(200, 64, 2000)
    # Template placement in the crop, as fractions of its side.
    eye_distance: float = bounded(0.28, 0.05, 0.9)
    eye_y: float = bounded(0.38, 0.05, 0.95)
    sets: list[str] = listed(["celeba", "london"], DATASETS)
    min_found_fraction: float = bounded(0.3, 0.0, 1.0)
    celeba: AlignSetParams = field(default_factory=lambda: AlignSetParams(detectors=["hog", "median_box"]))
    london: AlignSetParams = field(default_factory=AlignSetParams)
    umist: AlignSetParams = field(default_factory=lambda: AlignSetParams(mode="dataset_crop", detectors=["hog", "cnn"]))
    emoji: AlignSetParams = field(default_factory=AlignSetParams)
    scut: AlignSetParams = field(default_factory=AlignSetParams)

    def check(self, key: str) -> None:
        check_device(key, self.device)


@dataclass(frozen=True)
class MultiPieParams(SourceParams):
    """TP-GAN's data (stage `multipie`): the release, an identity-disjoint split, landmarks by rule."""
    folder: str = "multipie"
    split: SplitParams = field(default_factory=lambda: SplitParams(train=0.8, val=0.0, test=0.2))
    detectors: list[str] = listed(["hog", "cnn"], DETECTORS)
    detect_side: int = bounded(200, 32, 4096)
    trusted_yaw: float = bounded(45.0, 0.0, 90.0)   # |yaw| up to which the detector's landmarks are used
    workers: int = bounded(2, 1, 256)
    size: int = bounded(128, 16, 1024)     # stored side (the mirror's crops are 128 x 128)


@dataclass(frozen=True)
class FidStatsParams:
    """Real-image statistics for FID/KID, one file per (set, split, resolution)."""
    sets: list[str] = listed(["celeba", "avatars"], IMAGE_SETS)
    split: Literal["train", "val", "test"] = "test"
    batch_size: int = bounded(25, 1, 4096)
    # bf16 runs ~2x faster here but moves FID by more than 0.5 % (see benchmarks/fid_throughput.py)
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"

    def check(self, key: str) -> None:
        check_device(key, self.device)


@dataclass(frozen=True)
class FeaturesParams:
    """FaceNet's features of the stored sets and their mirror images, computed once (stage `features`)."""
    sets: list[str] = listed(["celeba", "london", "avatars"], IMAGE_SETS)
    mirrored: list[str] = listed([], IMAGE_SETS)   # also cache these sets' mirror images (for training with flips)
    multipie_sizes: list[int] = field(default_factory=lambda: [64, 128])   # TP-GAN's frontals at these sizes
    precision: Literal["fp32", "bf16"] = "bf16"
    batch_size: int = bounded(64, 1, 8192)
    device: str = "auto"

    def check(self, key: str) -> None:
        check_device(key, self.device)
        if set(self.mirrored) - set(self.sets):
            raise ConfigError(f"{key}.mirrored: {sorted(set(self.mirrored) - set(self.sets))} not in {key}.sets")


@dataclass(frozen=True)
class IdentityParams:
    """The real-photo gallery that identity preservation is measured against."""
    set: Literal["celeba"] = "celeba"
    split: Literal["train", "val", "test"] = "test"
    pairs: int = bounded(3000, 10, 1_000_000)   # genuine pairs at most; as many impostors
    seed: int = bounded(0, 0)


@dataclass(frozen=True)
class ReaderParams:
    """A reader of binary traits off an image (metrics/attributes.py's network), fitted by its own stage."""
    width: int = bounded(16, 4, 512)
    epochs: int = bounded(4, 1, 1000)
    batch_size: int = bounded(64, 2, 8192)
    lr: float = bounded(1e-3, 1e-6, 1.0)
    bf16: bool = True
    seed: int = bounded(0, 0)


@dataclass(frozen=True)
class AttrClassifierParams(ReaderParams):
    attributes: list[str] = listed(["Male", "Young", "Blond_Hair", "Black_Hair", "Brown_Hair", "Attractive",
                                    "Smiling", "Eyeglasses", "Mustache", "No_Beard", "Pale_Skin",
                                    "Heavy_Makeup"], CELEBA_ATTRIBUTES)


@dataclass(frozen=True)
class AvatarReaderParams(ReaderParams):
    """The avatars' trait reader (metrics/avatars.py): the judge's network on the rendered avatars' parts."""
    epochs: int = bounded(8, 1, 1000)


@dataclass(frozen=True)
class BeautyParams:
    """Per-rater beauty predictors (Beholder-GAN's semi-supervised step), stage `beauty`."""
    set: Literal["london", "scut"] = "london"
    expression: str = "neutral"     # rows of this expression when the manifest has one ('' = all)
    race: str = ""                  # only the faces of this group of the release (SCUT: asian | caucasian; '' = all)
    raters: int = bounded(60, 1, 100_000)   # K: a seeded sample of the raters who rated every face
    seed: int = bounded(0, 0)
    folds: int = bounded(10, 2, 1000)       # cross-validation over faces
    descriptor: Literal["facenet_pool", "facenet_embedding", "dlib"] = "facenet_pool"
    model: Literal["per_rater", "crowd_offset"] = "per_rater"   # crowd_offset: crowd-mean ridge + each rater's offset
    alphas: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0])

    def check(self, key: str) -> None:
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(f"{key}.alphas: give at least one ridge penalty, all > 0")


@dataclass(frozen=True)
class PseudoLabelParams:
    """The per-rater predictors rate every aligned face of `set` (stage `pseudo_label`)."""
    set: Literal["celeba"] = "celeba"


@dataclass(frozen=True)
class TrainCommonParams:
    """What every method's training shares (train.common)."""
    device: str = "auto"
    bf16: bool = True              # autocast where the CPU/GPU has bf16
    channels_last: bool = True
    seed: int = bounded(0, 0)
    batch_size: int = bounded(64, 1, 8192)   # per process
    max_steps: int = bounded(100_000, 1)   # a cap: max_minutes binds at the default params
    max_minutes: float = bounded(9.5, 0.0)   # wall-clock budget; stops cleanly and saves
    checkpoint_every: int = bounded(500, 1)
    sample_every: int = bounded(500, 1)
    log_every: int = bounded(20, 1)
    nproc: int = bounded(1, 1, 512)          # > 1: the stage runs under torchrun
    # the cheap quality figure logged while training (Method.progress_probe): tried every progress_every
    # steps, run only while all checks so far cost at most progress_share of the run's time
    progress_every: int = bounded(100, 1)
    progress_samples: int = bounded(128, 0, 100_000)   # samples or faces per check; 0 = no checks
    progress_share: float = bounded(0.05, 0.0, 1.0)

    def check(self, key: str) -> None:
        check_device(key, self.device)


@dataclass(frozen=True)
class MethodParams:
    """What every train.<method> section may set besides its own keys."""
    max_minutes: float = bounded(0.0, 0.0)   # this method's budget per run; 0 = train.common.max_minutes
    batch_size: int = bounded(0, 0, 8192)    # this method's batch per process; 0 = train.common.batch_size


DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")   # DiffAugment's (Zhao et al. 2020)


@dataclass(frozen=True)
class CGANParams(MethodParams):
    attributes: list[str] = listed(["Young", "Blond_Hair", "Male", "Attractive", "Smiling", "Eyeglasses"],
                                   CELEBA_ATTRIBUTES)
    z_dim: int = bounded(128, 1, 4096)
    g_width: int = bounded(32, 2, 1024)   # G: 8w channels at 4 x 4, halved per doubling
    d_width: int = bounded(16, 2, 1024)   # D: w channels at 32 x 32, doubled per halving
    lr_g: float = bounded(1e-3, 1e-7, 1.0)
    lr_d: float = bounded(1e-3, 1e-7, 1.0)
    beta1: float = bounded(0.0, 0.0, 0.999)
    beta2: float = bounded(0.9, 0.0, 0.9999)
    ema_decay: float = bounded(0.999, 0.0, 1.0)
    diffaugment: list[str] = listed([], DIFFAUGMENT_POLICIES)   # D sees reals and fakes augmented alike (ours)
    lambda_cls: float = bounded(5.0, 0.0)   # AC-GAN term: D's attribute head on reals, G's fakes against c' (ours)


@dataclass(frozen=True)
class BeholderParams(MethodParams):
    raters: int = bounded(60, 1, 100_000)        # K, the length of beta: must equal beauty.raters
    z_dim: int = bounded(128, 1, 4096)
    g_width: int = bounded(32, 2, 1024)
    d_width: int = bounded(16, 2, 1024)
    lr_g: float = bounded(1e-3, 1e-7, 1.0)
    lr_d: float = bounded(1e-3, 1e-7, 1.0)
    beta1: float = bounded(0.0, 0.0, 0.999)
    beta2: float = bounded(0.9, 0.0, 0.9999)
    ema_decay: float = bounded(0.999, 0.0, 1.0)
    diffaugment: list[str] = listed([], DIFFAUGMENT_POLICIES)   # D sees reals and fakes augmented alike (ours)
    lambda_beta: float = bounded(0.5, 0.0)       # weight of MSE(beta_hat, beta) for D (real) and G (fake)
    london_real: bool = True                     # add the rating set's train faces with their real ratings
    encoder_width: int = bounded(16, 0, 1024)    # E: x -> (z, c) learnt on G's samples, inversion's warm start
                                                 #   (ours, for speed); 0 = none (the paper's random starts)
    lr_e: float = bounded(1e-3, 1e-7, 1.0)
    keep: list[str] = listed(["Male"], CELEBA_ATTRIBUTES)   # CelebA attributes G also reads and D and E predict,
                                                 #   held fixed by beautification (ours; the paper: none; beholder.py)
    lambda_kept: float = bounded(1.0, 0.0)       # weight of their BCE for D (real), G (fake) and E
    lambda_identity: float = bounded(0.0, 0.0)   # G keeps FaceNet's person along beta (ours; beholder.py); 0 = off
    identity_samples: int = bounded(8, 1, 4096)  # fakes per step the identity term raises and compares
    identity_every: int = bounded(4, 1, 1_000_000)   # the identity term's steps (FaceNet costs ~1.5 plain steps)


@dataclass(frozen=True)
class FaderParams(MethodParams):
    attributes: list[str] = listed(["Male", "Young"], CELEBA_ATTRIBUTES)
    width: int = bounded(32, 2, 1024)          # E's first block; doubled per block up to max_width
    max_width: int = bounded(512, 2, 4096)
    latent_size: int = bounded(2, 1, 64)       # side of E's latent map (the paper: 2)
    upsample: Literal["transpose", "resize"] = "transpose"   # Dec's 2x step: ConvTranspose 4x4 (the paper) or
                                               # nearest x2 + Conv 3x3 (no checkerboard; Odena et al. 2016)
    lr: float = bounded(2e-4, 1e-7, 1.0)       # Adam for the autoencoder and the latent discriminator
    beta1: float = bounded(0.5, 0.0, 0.999)
    lambda_e: float = bounded(0.05, 0.0)       # target weight of -log P(1 - y | E(x)) in L_AE
    lambda_warmup: int = bounded(0, 0)         # steps with lambda_E = 0 (the autoencoder alone)
    lambda_steps: int = bounded(300, 0)        # then linear from 0 to lambda_e over this many steps
    dis_steps: int = bounded(3, 1, 100)        # latent-discriminator steps per autoencoder step (the paper: 1)
    adversary: Literal["flip", "uniform"] = "uniform"   # E's target for the discriminator: 1 - y (the paper) or 1/2
    replay: int = bounded(16, 1, 10_000)       # recent batches' latents the extra discriminator steps draw from
    lambda_mmd: float = bounded(0.1, 0.0)      # weight of the MMD between E(x) of faces with / without each
                                               # attribute (ours, after Louizos et al. 2016; the paper: 0)
    lambda_linear: float = bounded(0.0, 0.0)   # weight of the squared separation of each attribute's classes
                                               # along the best linear discriminant of recent E(x) (ours)


@dataclass(frozen=True)
class DTNParams(MethodParams):
    target: Literal["avatars", "emoji"] = "avatars"   # T: rendered avatars, or the Noto emoji faces
    f_layer: Literal["pool", "embedding"] = "pool"    # g's input f(x): FaceNet's 1792-d pool or 512-d embedding
    const_layer: Literal["embedding", "pool"] = "embedding"   # the layer L_CONST keeps (the paper: f_layer)
    const_centred: bool = True   # L_CONST on f's offsets from each domain's mean (the paper: f itself)
    f_components: int = bounded(64, 0, 1792)   # g reads f on T's top principal axes (0: all of f)
    g_kind: Literal["parts", "decoder"] = "parts"   # g: h chooses the avatar's parts, R draws them | the paper's decoder
    choice: Literal["straight_through", "gumbel", "soft"] = "straight_through"   # parts: h's choices in training
    h_width: int = bounded(256, 2, 65536)      # parts: h's hidden units
    tid_parts: float = bounded(50.0, 0.0)      # parts: weight of L_TID in part space, t's own parts (ours; 0: pixels only)
    const_parts: float = bounded(50.0, 0.0)    # parts: weight of L_CONST by assignment (ours; 0: off)
    const_neighbours: int = bounded(10, 1, 100_000)   # ... each face's target: its k nearest training avatars
    const_tau: float = bounded(0.05, 1e-4, 10.0)      # ... weighted by softmax(cos / tau)
    assign_bank: int = bounded(0, 0, 1_000_000)   # ... among the training avatars and this many more drawn by R,
                                                  # all read as f(J(R(parts))) (0: the training avatars' cached f)
    assign_steps: int = bounded(0, 0, 10_000_000)  # first steps: h alone on the part-space terms (no render)
    assign_synthetic: int = bounded(96, 0, 100_000)   # ... with this many synthetic faces (f ~ N of S's f) a step
    g_width: int = bounded(32, 2, 1024)        # g: 8w channels at 4 x 4, halved per doubling (the paper: 512 at 4)
    g_upsample: Literal["transposed", "resize"] = "resize"   # g's x2 upscaling convolution (the paper: "upscaling")
    f_standardise: bool = True                 # g reads f standardised per domain (ours; the paper: as it is)
    d_width: int = bounded(32, 2, 1024)        # D: w channels at 32 x 32, doubled per halving
    lr: float = bounded(1e-3, 1e-7, 1.0)
    d_lr: float = bounded(0.0, 0.0, 1.0)        # D's learning rate (0: lr)
    beta1: float = bounded(0.5, 0.0, 0.999)
    alpha: float = bounded(30.0, 0.0)          # L_CONST = 1 - cos weight (the paper: 100 on its MSE)
    beta: float = bounded(100.0, 0.0)          # L_TID weight (the paper: 1; see methods/dtn.py)
    gamma: float = bounded(0.001, 0.0)         # L_TV weight, TV summed per image (the paper: 0.05)
    tid_warmup: int = bounded(300, 0, 10_000_000)  # first steps: g on beta L_TID + gamma L_TV only, no D, no f pass
    alpha_ramp: int = bounded(50, 0, 10_000_000)  # game steps over which alpha rises from 0 (ours; 0: constant)
    const_shift: int = bounded(2, 0, 16)       # f reads G(s) shifted by up to this many pixels (ours; 0: as it is)
    const_blur: float = bounded(1.0, 0.0, 3.0)  # ... and blurred by a Gaussian of sigma up to this (pixels)
    const_faces: int = bounded(8, 0, 100_000)  # faces of each batch f reads for L_CONST (ours; 0: all, the paper)
    g_steps: int = bounded(1, 1, 100)          # g steps per D step, on the same batch


@dataclass(frozen=True)
class TPGANParams(MethodParams):
    size: Literal[64, 128] = 64                # the global pathway's resolution (the paper: 128)
    width: int = bounded(16, 2, 1024)          # global pathway: w at S, 8w at S/16 (the paper: 64 .. 512)
    local_width: int = bounded(16, 2, 1024)    # local pathways: w at the patch, doubled per halving
    d_width: int = bounded(16, 2, 1024)
    z_dim: int = bounded(64, 1, 4096)          # noise appended at the bottleneck (the paper: 100)
    lr: float = bounded(5e-4, 1e-7, 1.0)
    beta1: float = bounded(0.5, 0.0, 0.999)
    lambda_sym: float = bounded(0.3, 0.0)      # the paper's lambda_1 .. lambda_4
    lambda_adv: float = bounded(1e-3, 0.0)
    lambda_ip: float = bounded(0.1, 0.0)       # (the paper: 3e-3 on its L1 of Light-CNN's features)
    lambda_tv: float = bounded(1e-4, 0.0)
    ip_loss: Literal["l1", "cosine"] = "cosine"   # L_ip: 1 - cos of f's features (ours) | the paper's mean L1
    mirror_input: bool = True                  # the global pathway reads the input and its mirror image (theirs)
    lambda_id: float = bounded(0.1, 0.0)       # cross-entropy of the training person from the encoder's code
    id_classes: int = bounded(64, 2, 100_000)  # that head's outputs: at least the training people
    mirror_augment: bool = False               # flip half of each batch's pairs (input, frontal, centres; ours)
    frontal_prior: bool = True                 # G reads, and blends in, the input warped to the frontal template (ours)
    prior_mirror_at: float = bounded(30.0, 1.0, 90.0)   # |yaw| from which the hidden half is the visible half's mirror
    lambda_prior: float = bounded(0.0, 0.0)    # weight of the drawn share mean(1 - m) of the output (ours)
    prior_shading: int = bounded(0, 0, 16)     # G relights the prior: gain and offset on an n x n grid (ours; 0 off)
    ema_decay: float = bounded(0.0, 0.0, 1.0)   # G used for frontalising: a moving average of the trained G (ours)


@dataclass(frozen=True)
class GeoGANParams(MethodParams):
    attribute: Literal["Smiling", "Eyeglasses"] = "Smiling"   # y: moved from the reference b onto a
    width: int = bounded(16, 2, 1024)          # every encoder-decoder: w at 64 x 64, doubled per halving
    d_width: int = bounded(32, 2, 1024)
    max_flow: float = bounded(0.5, 0.01, 2.0)  # |flow| bound, in grid units (1 = half the image side)
    lr: float = bounded(1e-3, 1e-7, 1.0)       # theirs 2e-4 (see geogan.py: too slow for a few dozen steps)
    beta1: float = bounded(0.5, 0.0, 0.999)
    lambda_cls: float = bounded(3.0, 0.0)      # domain classification (the authors' example: 0.2)
    lambda_rec: float = bounded(5.0, 0.0)      # cycle reconstruction, L1 (their lambda_gan_feat: 5)
    lambda_lm: float = bounded(2560.0, 0.0)    # landmark MSE in grid units (theirs: 10 x 256 x MSE)
    lambda_flow_tv: float = bounded(0.0, 0.0)  # TV of the flow in pixels (their lambda_flow_reg: 1, dense flow)
    lambda_mask: float = bounded(2.0, 0.0)     # mask sparsity, mean(m) (their lambda_mask: 0.1)
    refine_weight: float = bounded(0.1, 0.0, 1.0)   # refinement residual scale, times the mask (their res_weight)
    refine_start: int = bounded(10, 0)         # game steps (after the warm-up) before the refinement is switched
                                               # on (theirs: epoch 10 of 100)
    flow: Literal["landmarks", "dense"] = "landmarks"   # flow sub-network: a spline through estimated landmarks
                                               # (ours) or an image-to-flow encoder-decoder (the paper)
    lambda_points: float = bounded(2560.0, 0.0)  # the landmark estimator's own MSE (flow "landmarks"; ours)
    warmup: int = bounded(150, 0)              # first steps: D's attribute head and the landmark estimator only
    d_cls_outputs: bool = True                 # D's attribute head also learns a_y as without y (ours; theirs
                                               # and StarGAN's learn it on real faces only)
    mask_free_area: float = bounded(0.1, 0.0, 1.0)   # L_mask = relu(mean(m) - this) per face (ours); 0 = theirs
    ema_decay: float = bounded(0.0, 0.0, 1.0)  # G's parts are used as moving averages of the trained ones
                                               # (ours; 0: as trained, theirs)
    reference_shape: list[str] = listed([], LANDMARK_GROUPS)   # parts whose shape the flow leaves as b's (e.g.
                                               # [mouth]: a smile keeps its own geometry; ours); theirs: none


@dataclass(frozen=True)
class TrainParams:
    common: TrainCommonParams = field(default_factory=TrainCommonParams)
    cgan: CGANParams = field(default_factory=CGANParams)
    beholder: BeholderParams = field(default_factory=BeholderParams)
    fader: FaderParams = field(default_factory=FaderParams)
    dtn: DTNParams = field(default_factory=DTNParams)
    tpgan: TPGANParams = field(default_factory=TPGANParams)
    geogan: GeoGANParams = field(default_factory=GeoGANParams)


@dataclass(frozen=True)
class EvalParams:
    """What every evaluate@<method> shares (section `eval`)."""
    n_samples: int = bounded(500, 2, 1_000_000)
    batch_size: int = bounded(100, 1, 8192)
    kid_subsets: int = bounded(100, 1, 10_000)
    fid_se_rounds: int = bounded(5, 0, 1000)     # bootstrap rounds for FID's standard error (fid_se); < 2: none
    seed: int = bounded(0, 0)


# ---------------------------------------------------------------- evaluate.<method>: how a method is JUDGED
# Kept apart from train.<method>: these keys never enter the training fingerprint, so changing them
# re-runs evaluate@<method> (and the report) and keeps the checkpoint.

@dataclass(frozen=True)
class CGANEval:
    grid_z: int = bounded(8, 1, 64)              # fixed z per row of attribute_combinations.png


@dataclass(frozen=True)
class InversionParams:
    """Beholder-GAN beautification: recover (z, beta) of a photo by gradient descent, regenerate at beta + delta.
    Read by evaluate@beholder and, as defaults, by `facegan beautify`."""
    steps: int = bounded(15, 1, 100_000)         # from the encoder's start (the paper's random starts need ~100)
    starts: int = bounded(1, 1, 1024)            # (z0, beta0) per photo, the lowest loss wins (random starts: 4)
    lr: float = bounded(0.05, 1e-6, 10.0)
    alpha: float = bounded(0.5, 0.0, 1.0)        # alpha * pixel L2 + (1 - alpha) * FaceNet feature loss
    init: Literal["encoder", "random"] = "encoder"   # the first start: E(x) (the model's encoder) or random
    tune_steps: int = bounded(100, 0, 100_000)   # pivotal tuning (Roich et al. 2021): then G's weights per photo
    tune_lr: float = bounded(1e-3, 1e-7, 1.0)    # Adam's step for the tuned weights (PTI's 3e-4; beholder.py)
    tune_from: str = "blocks.0"                   # the first of G's layers tuned (fc, blocks.0, ..., out); the
                                                  #   earlier run once for every copy (PTI: all of G; beholder.py)
    tune_edit: float = bounded(2.5, 0.0, 1000.0)  # weight of the edit term: the tuned G keeps G's own change
                                                  #   under beta (PTI's locality idea applied to beta; beholder.py)
    tune_feature: float = bounded(0.0, 0.0, 1000.0)  # weight of FaceNet's embedding distance while tuning
                                                  #   (PTI's perceptual term: LPIPS there; 0 = pixels alone)


@dataclass(frozen=True)
class BeholderEval:
    levels: int = bounded(8, 2, 100)             # beta quantile levels per strip
    strips: int = bounded(100, 2, 100_000)       # fixed z per level, for beauty_spearman
    beautify_faces: int = bounded(32, 2, 100_000)   # held-out test faces beautified
    delta: float = bounded(1.0, -3.0, 3.0)       # added to every rater's beta, in that rater's std
    inversion: InversionParams = field(default_factory=InversionParams)


@dataclass(frozen=True)
class FaderEval:
    identity_faces: int = bounded(200, 2, 100_000)   # test faces whose swaps dlib checks for identity
    # the slider value that swaps each attribute on: alpha (absent -> present) and 1 - alpha (present ->
    # absent); the authors' README: "alpha_max=2 is usually enough" for gender and glasses, 10 for age
    recommended_alpha: dict[str, float] = field(
        default_factory=lambda: {"Male": 2.0, "Eyeglasses": 2.0, "Young": 10.0},
        metadata={"choices": tuple(CELEBA_ATTRIBUTES), "min": 1.0, "max": 100.0})
    probe_faces: int = bounded(4000, 10, 1_000_000)   # training faces the fresh linear probe on E(x) learns from
    curve_faces: int = bounded(500, 2, 1_000_000)   # test faces of the present-rate curve over alpha (alpha_curve.csv)
    reconstruction_fid: bool = False   # also FID/KID of the reconstructions (a second Inception pass, ~30 s)


@dataclass(frozen=True)
class DTNEval:
    retrieval: int = bounded(100, 2, 100_000)        # N test faces of different people per retrieval
    retrieval_sets: int = bounded(10, 1, 1000)       # random draws of the N, averaged
    identity_faces: int = bounded(200, 2, 100_000)   # faces whose G(s) dlib verifies (a recognizer g never saw)


@dataclass(frozen=True)
class TPGANEval:
    gallery_flash: int = bounded(7, 0, 19)       # each test person's frontal photo under this flash
    detectors: list[str] = listed(["hog"], ("hog", "cnn"))   # dlib's face finding for its descriptors
    umist: bool = True                           # also identify UMIST's people (most frontal image as gallery)


@dataclass(frozen=True)
class GeoGANEval:
    identity_faces: int = bounded(200, 2, 100_000)   # outputs dlib verifies against another photo of a's person
    landmark_faces: int = bounded(200, 2, 100_000)   # warped references whose landmarks dlib measures


@dataclass(frozen=True)
class EvaluateParams:
    cgan: CGANEval = field(default_factory=CGANEval)
    beholder: BeholderEval = field(default_factory=BeholderEval)
    fader: FaderEval = field(default_factory=FaderEval)
    dtn: DTNEval = field(default_factory=DTNEval)
    tpgan: TPGANEval = field(default_factory=TPGANEval)
    geogan: GeoGANEval = field(default_factory=GeoGANEval)


@dataclass(frozen=True)
class TrackingParams:
    enabled: bool = True
    experiment: str = "facegan"


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    render_avatars: RenderAvatarsParams = field(default_factory=RenderAvatarsParams)
    multipie: MultiPieParams = field(default_factory=MultiPieParams)
    align: AlignParams = field(default_factory=AlignParams)
    fid_stats: FidStatsParams = field(default_factory=FidStatsParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    identity: IdentityParams = field(default_factory=IdentityParams)
    attr_classifier: AttrClassifierParams = field(default_factory=AttrClassifierParams)
    avatar_reader: AvatarReaderParams = field(default_factory=AvatarReaderParams)
    beauty: BeautyParams = field(default_factory=BeautyParams)
    pseudo_label: PseudoLabelParams = field(default_factory=PseudoLabelParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)


# ---------------------------------------------------------------- loading

def _type_name(tp) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping of {} to {}".format(*(_type_name(t) for t in typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def _convert(tp, value: Any, key: str, meta: Mapping) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, meta)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        items = [_convert(inner, v, f"{key}[{i}]", {}) for i, v in enumerate(value)]
        choices = meta.get("choices")
        for i, item in enumerate(items):
            if choices and item not in choices:
                raise ConfigError(f"{key}[{i}]: {item!r} is not allowed; choose from {', '.join(choices)}")
        return items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        key_type, value_type = typing.get_args(tp)
        choices = meta.get("choices")
        out = {}
        for name, item in value.items():
            name = _convert(key_type, name, f"{key} key {name!r}", {})
            if choices and name not in choices:
                raise ConfigError(f"{key}: {name!r} is not allowed; choose from {', '.join(choices)}")
            out[name] = _convert(value_type, item, f"{key}.{name}", {"min": meta.get("min"), "max": meta.get("max")})
        return out
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"unsupported params type {tp} at {key}")
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    value = float(value) if tp is float else value
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{key}: {value!r} is out of range; allowed {lo if lo is not None else '-inf'} .. "
                          f"{hi if hi is not None else 'inf'}")
    return value


def build(cls, data: Any, key: str = ""):
    """Instantiate dataclass `cls` from a mapping, checking every key."""
    label = key or "params"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"unknown key '{where}{unknown[0]}'; allowed keys in {label}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], data[name], f"{key}.{name}" if key else name, fields[name].metadata)
              for name in fields if name in data}
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(label)
    return obj


def load_params(path: str | Path | None = None) -> Params:
    path = Path(path) if path else project_root() / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return build(Params, raw)


def section_dict(section) -> dict:
    """A params section as plain nested dicts (for MLflow and JSON)."""
    return dataclasses.asdict(section)
