import numpy as np
import pandas as pd
from PIL import Image

from facegan.config import RenderAvatarsParams
from facegan.data.avatars import run_render_avatars
from facegan.data.datasets import read_image_set


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
