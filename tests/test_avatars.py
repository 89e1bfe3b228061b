import numpy as np
import pandas as pd
from PIL import Image

from facegan.config import RenderAvatarsParams
from facegan.data.avatars import run_render_avatars


def test_avatars_are_seeded_drawn_and_labelled(tmp_path):
    params = RenderAvatarsParams(n=6, size=48, seed=7)
    quality = run_render_avatars(params, tmp_path / "a")
    run_render_avatars(params, tmp_path / "b")
    assert quality.kept == 6
    first = pd.read_csv(tmp_path / "a/manifest.csv")
    assert first.equals(pd.read_csv(tmp_path / "b/manifest.csv"))
    assert {"top", "hair_color", "skin_color", "accessory", "facial_hair", "glasses", "hat"} <= set(first.columns)
    for path in first["path"]:
        image = np.asarray(Image.open(tmp_path / "a" / path))
        assert image.shape == (48, 48, 3)
        assert image.std() > 10                                   # drawn, not blank
        assert (np.asarray(Image.open(tmp_path / "b" / path)) == image).all()
    other = run_render_avatars(RenderAvatarsParams(n=6, size=48, seed=8), tmp_path / "c")
    assert other.kept == 6
    assert not pd.read_csv(tmp_path / "c/manifest.csv")["top"].equals(first["top"])
