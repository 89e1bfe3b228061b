"""The rendered avatars (DTN's target domain) and DTN's instruments read off them (metrics/avatars.py)."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facegan.config import AvatarReaderParams, RenderAvatarsParams
from facegan.data.avatars import run_render_avatars
from facegan.data.datasets import read_image_set, to_tensor
from facegan.metrics.avatars import (TRAITS, attribute_agreement, avatar_traits, celeba_traits, load_reader,
                                     perturb, run_avatar_reader)


def test_avatars_are_seeded_drawn_and_labelled(tmp_path):
    params = RenderAvatarsParams(n=6, size=48, seed=7)
    quality = run_render_avatars(params, tmp_path / "a")
    run_render_avatars(RenderAvatarsParams(n=6, size=48, seed=7, workers=1), tmp_path / "b")   # same avatars
    assert quality.kept == 6
    first = pd.read_csv(tmp_path / "a/manifest.csv")
    assert first.equals(pd.read_csv(tmp_path / "b/manifest.csv"))
    assert {"top", "hair_color", "skin_color", "accessory", "facial_hair", "glasses", "hat"} <= set(first.columns)
    images, frame = read_image_set(tmp_path / "a")
    assert images.shape == (6, 48, 48, 3) and list(frame["path"]) == list(first["path"])
    assert all(image.std() > 10 for image in images)               # drawn, not blank
    assert (read_image_set(tmp_path / "b")[0] == images).all()
    assert Image.open(tmp_path / "a" / "contact_sheet.png").size == (6 * 48, 48)
    other = run_render_avatars(RenderAvatarsParams(n=6, size=48, seed=8), tmp_path / "c")
    assert other.kept == 6
    assert not pd.read_csv(tmp_path / "c/manifest.csv")["top"].equals(first["top"])


# ---------------------------------------------------------------- DTN's instruments (metrics/avatars.py)

def test_perturbation_keeps_a_picture_and_erases_a_pattern_only_a_network_reads():
    """A smooth picture survives blur, shift and JPEG nearly unchanged; a pixel checkerboard (the kind of
    high frequency a generator can hide from a human but show to f) does not."""
    ramp = torch.linspace(-0.8, 0.8, 64).repeat(1, 3, 64, 1)
    assert (perturb(ramp) - ramp).abs().mean() < 0.05
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 0.4 - 0.2
    hidden = ramp + checker
    residual = perturb(hidden) - perturb(ramp)
    assert residual.abs().mean() < 0.25 * checker.abs().mean()
    assert perturb(hidden).shape == hidden.shape and perturb(hidden).abs().max() <= 1


def test_traits_from_the_avatars_manifest_and_from_celeba():
    avatars = pd.DataFrame({"top": ["bob", "hat", "bob", "bob"], "hair_color": ["blonde", "black", "red", "black"],
                            "glasses": [1, 0, 0, 1], "facial_hair": ["none", "beard_light", "none", "none"],
                            "skin_color": ["pale", "light", "brown", "black"]})
    expected = np.array([[1, 1, 0, 1], [np.nan, 0, 1, np.nan], [np.nan, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(avatar_traits(avatars), expected)
    celeba = pd.DataFrame({"Blond_Hair": [1, 0, 1, 0], "Black_Hair": [0, 1, 1, 0], "Eyeglasses": [1, 0, 0, 0],
                           "No_Beard": [1, 0, 1, 1], "Pale_Skin": [0, 0, 1, 0]})
    expected = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [np.nan, 0, 0, 1], [np.nan, 0, 0, 0]])
    np.testing.assert_array_equal(celeba_traits(celeba), expected)
    with pytest.raises(ValueError, match="lacks.*skin_color"):
        avatar_traits(avatars.drop(columns="skin_color"))


def test_the_reader_learns_the_avatars_traits_and_scores_agreement(tmp_path):
    """Trained on 300 rendered avatars it reads glasses and light/dark hair off held-out ones; agreement
    of avatars with 'photos' whose CelebA labels are the avatars' own is that accuracy, and with shuffled
    labels it falls to chance."""
    out = tmp_path / "data" / "avatars"
    run_render_avatars(RenderAvatarsParams(n=400, size=64, seed=3), out)      # 280 train, 20 val, 100 test
    metrics = run_avatar_reader(AvatarReaderParams(epochs=12, bf16=False), tmp_path)
    assert metrics["test_balanced_accuracy_glasses"] > 0.75
    assert metrics["test_balanced_accuracy_hair_light"] > 0.75
    reader = load_reader(tmp_path)
    assert reader.attributes == TRAITS
    images, frame = read_image_set(out)
    test = (frame["split"] == "test").to_numpy()
    traits = avatar_traits(frame[test])
    as_celeba = pd.DataFrame({"Blond_Hair": (traits[:, 0] == 1).astype(int), "Black_Hair": (traits[:, 0] == 0).astype(int),
                              "Eyeglasses": traits[:, 1].astype(int), "No_Beard": 1 - traits[:, 2].astype(int),
                              "Pale_Skin": (traits[:, 3] == 1).astype(int)})
    agreement = attribute_agreement(reader, to_tensor(np.asarray(images[test])), as_celeba)
    assert agreement["agreement_glasses"] > 0.75 and agreement["agreement_hair_light_faces"] > 10
    shuffled = as_celeba.sample(frac=1, random_state=0).reset_index(drop=True)
    assert attribute_agreement(reader, to_tensor(np.asarray(images[test])), shuffled)["agreement_glasses"] < 0.65
    with pytest.raises(FileNotFoundError, match="dvc repro avatar_reader"):
        load_reader(tmp_path / "elsewhere")
