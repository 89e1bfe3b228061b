"""Stage `render_avatars`: the DTN target domain, cartoon avatars drawn by
`python-avatars` (SVG) and rasterised by `resvg-py` (cairosvg leaves some blank).

Every part is drawn from its full list with a seeded generator (facial hair and
accessories are absent half the time, as in python-avatars' own sampler), the
avatar is flattened on white and cropped to a square around the head, like an
aligned face crop, and all of its parts go into the manifest.
"""
from __future__ import annotations

import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from facegan.config import RenderAvatarsParams
from facegan.data.datasets import write_image_set
from facegan.data.manifest import assign_splits
from facegan.data.quality import SetQuality

# Head square inside python-avatars' 264 x 280 canvas.
HEAD_BOX = (32, 8, 232, 208)
CANVAS = (264, 280)
SUPERSAMPLE = 2


def _parts():
    import python_avatars as pa

    return {
        "top": pa.TopType, "hair_color": pa.HairColor, "hat_color": pa.ClothingColor,
        "skin_color": pa.SkinColor, "eyebrows": pa.EyebrowType, "eyes": pa.EyeType, "nose": pa.NoseType,
        "mouth": pa.MouthType, "facial_hair": pa.FacialHairType, "facial_hair_color": pa.HairColor,
        "accessory": pa.AccessoryType, "clothing": pa.ClothingType, "clothing_color": pa.ClothingColor,
        "shirt_graphic": pa.ClothingGraphic,
    }


HALF_ABSENT = {"facial_hair", "accessory"}
NOT_GLASSES = {"NONE", "EYEPATCH"}
HAT_NAMES = {"HAT", "HIJAB", "TURBAN", "WINTER_HAT_1", "WINTER_HAT_2", "WINTER_HAT_3", "WINTER_HAT_4",
             "CHEF_CAP", "JEDI", "GLADIATOR_HELMET"}


def sample_attributes(rng: np.random.Generator) -> dict:
    """One avatar's parts, each an enum member."""
    chosen = {}
    for name, enum in _parts().items():
        members = enum.get_all()  # TopType lists hair and hats this way, not by iteration
        if name in HALF_ABSENT and rng.random() < 0.5:
            chosen[name] = enum.NONE
        else:
            chosen[name] = members[rng.integers(len(members))]
    return chosen


def render(attributes: dict, size: int) -> Image.Image:
    import python_avatars as pa
    import resvg_py

    svg = pa.Avatar(style=pa.AvatarStyle.TRANSPARENT, shirt_text="", **attributes).render()
    zoom = SUPERSAMPLE * size / (HEAD_BOX[2] - HEAD_BOX[0])
    png = resvg_py.svg_to_bytes(svg_string=svg, width=round(CANVAS[0] * zoom), height=round(CANVAS[1] * zoom),
                                background="white")
    image = Image.open(io.BytesIO(bytes(png))).convert("RGB")
    box = tuple(round(v * zoom) for v in HEAD_BOX)
    return image.crop(box).resize((size, size), Image.Resampling.LANCZOS)


def _render_pair(item: tuple[dict, int]) -> np.ndarray:
    return np.asarray(render(*item))


def run_render_avatars(params: RenderAvatarsParams, out_dir, seed_offset: int = 0) -> SetQuality:
    """Parts are drawn in one seeded sequence, then rendered over `params.workers` processes
    (the same avatars for any number of workers)."""
    quality = SetQuality("avatars")
    rng = np.random.default_rng(params.seed + seed_offset)
    drawn = [sample_attributes(rng) for _ in range(params.n)]
    items = [(attributes, params.size) for attributes in drawn]
    if params.workers > 1 and len(items) > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(params.workers, mp_context=context) as pool:
            rendered = list(tqdm(pool.map(_render_pair, items, chunksize=32), total=len(items),
                                 desc="render avatars", unit="img", mininterval=2))
    else:
        rendered = [_render_pair(item) for item in tqdm(items, desc="render avatars", unit="img", mininterval=2)]
    records, images = [], []
    for index, (attributes, image) in enumerate(zip(drawn, rendered)):
        quality.read += 1
        if image.std() < 1.0:  # the failure cairosvg showed: a blank canvas
            quality.skip(f"avatar {index}", "blank_render")
            continue
        images.append(image)
        quality.kept += 1
        records.append({"path": f"avatar_{index:05d}", "identity": f"avatar_{index:05d}",
                        **{k: v.name.lower() for k, v in attributes.items()},
                        "glasses": int(attributes["accessory"].name not in NOT_GLASSES),
                        "hat": int(attributes["top"].name in HAT_NAMES)})
    frame = assign_splits(pd.DataFrame.from_records(records), params.split, params.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image_set(out_dir, frame, np.stack(images))
    return quality
