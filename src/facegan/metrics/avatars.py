"""Does an avatar carry the person? Two instruments for DTN that no network which trained g is part of.

Perturbed retrieval: f(G(s)) can be won by patterns only f reads (high-frequency
noise FaceNet maps onto the person: the failure the DTN paper reports at large
alpha). Such patterns do not survive what any saved and re-shared picture goes
through, so retrieval is also measured on `perturb(G(s))`: a 0.5-px Gaussian
blur, a 2-px shift and JPEG at quality 75 (fixed here and in README).

Attribute agreement: a reader trained on the rendered avatars' own manifest
(python-avatars' parts) reads four traits off G(s); each is compared with the
source photo's CelebA labels, as balanced accuracy over the faces where both
sides are defined:
    hair_light   avatar hair blonde, golden, platinum, silver grey or pastel pink (1) vs black, dark
                 brown or brown (0); red and auburn, hats and bald heads undefined | CelebA Blond_Hair (1)
                 vs Black_Hair (0), undefined otherwise
    glasses      any glasses or sunglasses                                 | Eyeglasses
    facial_hair  any beard or moustache                                    | not No_Beard
    pale_skin    skin "pale" (1) vs tanned, yellow, brown, dark brown, black (0); "light" undefined | Pale_Skin
The reader is the attribute judge's network (metrics/attributes.py) trained with
undefined labels masked out; stage `avatar_reader` fits it and reports its
accuracy on the real test avatars, the ceiling agreement can reach.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from facegan.metrics.attributes import AttributeClassifier, fit, load, per_attribute_scores, save

TRAITS = ["hair_light", "glasses", "facial_hair", "pale_skin"]
LIGHT_HAIR = {"blonde", "blonde_golden", "platinum", "silver_gray", "pastel_pink"}
DARK_HAIR = {"black", "brown_dark", "brown"}
HAIRLESS_TOPS = {"none", "hat", "hijab", "turban", "winter_hat_1", "winter_hat_2", "winter_hat_3",
                 "winter_hat_4", "chef_cap", "jedi", "gladiator_helmet", "astronaut"}
PALE_SKIN, NOT_PALE_SKIN = {"pale"}, {"tanned", "yellow", "brown", "dark_brown", "black"}
JPEG_QUALITY, SHIFT_PIXELS, BLUR_SIGMA = 75, 2, 0.5


def _either(values: pd.Series, positive: set, negative: set) -> np.ndarray:
    """1 where the value is in `positive`, 0 in `negative`, NaN otherwise."""
    values = values.astype(str).str.lower()
    return np.where(values.isin(positive), 1.0, np.where(values.isin(negative), 0.0, np.nan))


def avatar_traits(frame: pd.DataFrame) -> np.ndarray:
    """(N, 4) float labels (NaN = undefined) of rendered avatars from their manifest (stage render_avatars)."""
    missing = {"top", "hair_color", "glasses", "facial_hair", "skin_color"} - set(frame.columns)
    if missing:
        raise ValueError(f"the avatars' manifest lacks {sorted(missing)}: run `dvc repro render_avatars`")
    hair = _either(frame["hair_color"], LIGHT_HAIR, DARK_HAIR)
    hair[frame["top"].astype(str).str.lower().isin(HAIRLESS_TOPS).to_numpy()] = np.nan
    facial_hair = (frame["facial_hair"].astype(str).str.lower() != "none").to_numpy(np.float64)
    return np.stack([hair, frame["glasses"].to_numpy(np.float64), facial_hair,
                     _either(frame["skin_color"], PALE_SKIN, NOT_PALE_SKIN)], 1)


def celeba_traits(frame: pd.DataFrame) -> np.ndarray:
    """(N, 4) float labels (NaN = undefined) of CelebA faces, the counterparts of `avatar_traits`."""
    blond, black = frame["Blond_Hair"].to_numpy() == 1, frame["Black_Hair"].to_numpy() == 1
    hair = np.where(blond & ~black, 1.0, np.where(black & ~blond, 0.0, np.nan))
    return np.stack([hair, (frame["Eyeglasses"].to_numpy() == 1).astype(np.float64),
                     (frame["No_Beard"].to_numpy() != 1).astype(np.float64),
                     (frame["Pale_Skin"].to_numpy() == 1).astype(np.float64)], 1)


def perturb(images: torch.Tensor) -> torch.Tensor:
    """What a shared picture goes through: Gaussian blur (sigma 0.5 px), a shift of 2 px right and down
    (edges replicated), JPEG at quality 75. (N, 3, H, W) in [-1, 1] -> the same."""
    from torchvision.transforms.functional import gaussian_blur

    from facegan.data.datasets import to_tensor, to_uint8

    x = gaussian_blur(images.float().cpu(), kernel_size=3, sigma=BLUR_SIGMA)
    height, width = x.shape[-2:]
    x = F.pad(x, (SHIFT_PIXELS, 0, SHIFT_PIXELS, 0), mode="replicate")[..., :height, :width]
    decoded = []
    for image in to_uint8(x):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    return to_tensor(np.stack(decoded))


def attribute_agreement(reader: AttributeClassifier, outputs: torch.Tensor, source_frame: pd.DataFrame) -> dict:
    """Balanced accuracy of the reader's traits of G(s) against s's CelebA counterparts, per trait."""
    scores = per_attribute_scores(reader.predict(outputs), celeba_traits(source_frame), reader.attributes)
    result = {}
    for trait, score in scores.items():
        result[f"agreement_{trait}"] = score["balanced_accuracy"]
        result[f"agreement_{trait}_faces"] = score["images"]
    return result


def reader_path(root: Path) -> Path:
    return Path(root) / "models" / "avatar_reader"


def load_reader(root: Path) -> AttributeClassifier:
    path = reader_path(root)
    if not (path / "model.pt").exists():
        raise FileNotFoundError(f"{path / 'model.pt'} not found: run `dvc repro avatar_reader`")
    return load(path)


def run_avatar_reader(params, root: Path, device: str = "cpu", on_epoch=None) -> dict:
    """Stage `avatar_reader`: fit on the train avatars, select on val, score on the test avatars."""
    from facegan.data.datasets import load_images, set_folder, to_tensor

    images, frame = load_images(set_folder(root, "avatars"))
    x = to_tensor(images).contiguous(memory_format=torch.channels_last)
    y = torch.tensor(avatar_traits(frame), dtype=torch.float32)
    split = frame["split"].to_numpy()
    model = AttributeClassifier(TRAITS, params.width).to(device, memory_format=torch.channels_last)
    fitted = fit(model, (x[split == "train"], y[split == "train"]), (x[split == "val"], y[split == "val"]),
                 params.epochs, params.batch_size, params.lr, params.seed, params.bf16, on_epoch)
    test = split == "test"
    scores = per_attribute_scores(model.predict(x[test]), y[test].numpy(), TRAITS)
    save(model.cpu(), reader_path(root))
    return {**fitted, "test_avatars": int(test.sum()),
            **{f"test_balanced_accuracy_{trait}": s["balanced_accuracy"] for trait, s in scores.items()}}
