"""Stage `render_avatars`: the DTN target domain, cartoon avatars drawn by
`python-avatars` (SVG) and rasterised by `resvg-py` (cairosvg leaves some blank).

Every part is drawn from its full list with a seeded generator (facial hair and
accessories are absent half the time, as in python-avatars' own sampler), the
avatar is flattened on white and cropped to a square around the head, like an
aligned face crop, and all of its parts go into the manifest.

The stage also writes `layers.npz`: every option of every part rasterised alone
(premultiplied RGBA on a transparent ground, the same crop), which DTN's parts
generator composites differentiably (methods/avatar_parts.py). python-avatars
draws an avatar as SVG groups painted in document order, and painting "over" is
associative, so compositing the separately rasterised groups in that order gives
the avatar back (mean absolute error ~0.005 of the pixel range: the shared
resampling, and facial hair drawn after the hair where a few tops draw it
before; `layer_fidelity` measures it).
"""
from __future__ import annotations

import io
import multiprocessing
import xml.etree.ElementTree as ElementTree
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


def top_kind(top) -> str:
    """"hair" or "hat": python-avatars lists both kinds of top in one enum, and two share a name (HAT)."""
    return type(top).__name__.removesuffix("Type").lower()


def part_columns(attributes: dict) -> dict:
    """An avatar's manifest columns of its parts: each option's name, and the top's kind."""
    return {k: v.name.lower() for k, v in attributes.items()} | {"top_kind": top_kind(attributes["top"])}


def sample_part_indices(n: int, seed: int) -> np.ndarray:
    """n avatars drawn as render_avatars draws them (sample_attributes, seeded), as option indices
    (n, len(CHOSEN_PARTS)) in CHOSEN_PARTS order, without rendering them."""
    rng = np.random.default_rng(seed)
    indices = part_indices(pd.DataFrame([part_columns(sample_attributes(rng)) for _ in range(n)]))
    return np.stack([indices[part] for part in CHOSEN_PARTS], 1)


def avatar_svg(attributes: dict) -> str:
    import python_avatars as pa

    return pa.Avatar(style=pa.AvatarStyle.TRANSPARENT, shirt_text="", **attributes).render()


def rasterise(svg: str, size: int, background: str | None = "white") -> Image.Image:
    """The head square of an avatar SVG at size x size: RGB on `background`, or, with None, premultiplied
    RGBA ("RGBa") on a transparent ground (resampled premultiplied, so edges do not darken)."""
    import resvg_py

    zoom = SUPERSAMPLE * size / (HEAD_BOX[2] - HEAD_BOX[0])
    options = {"background": background} if background else {}
    png = resvg_py.svg_to_bytes(svg_string=svg, width=round(CANVAS[0] * zoom), height=round(CANVAS[1] * zoom),
                                **options)
    image = Image.open(io.BytesIO(bytes(png)))
    image = image.convert("RGB") if background else image.convert("RGBA").convert("RGBa")
    box = tuple(round(v * zoom) for v in HEAD_BOX)
    return image.crop(box).resize((size, size), Image.Resampling.LANCZOS)


def render(attributes: dict, size: int) -> Image.Image:
    return rasterise(avatar_svg(attributes), size)


# ------------------------------------------------------------------ the parts as layers
# python-avatars' groups in painting order; Facial-Hair and Accessory sit inside the top's SVG
LAYER_GROUPS = ("Body", "Clothing", "Mouth", "Nose", "Eyes", "Eyebrow", "Top", "Facial-Hair", "Accessory")
# the parts a generator chooses (manifest columns), each a categorical over its enum's members
CHOSEN_PARTS = ("skin_color", "clothing", "clothing_color", "mouth", "nose", "eyes", "eyebrows", "top",
                "hair_color", "hat_color", "facial_hair", "facial_hair_color", "accessory")


def part_options() -> dict[str, list]:
    """Each chosen part's options, in the order the layers and a generator's logits use."""
    parts = _parts()
    return {name: list(parts[name].get_all()) for name in CHOSEN_PARTS}


def part_indices(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each manifest row's option index of every chosen part (part_options' order). Two tops share a name
    (python-avatars' HairType.HAT and HatType.HAT): `top_kind` tells them apart."""
    indices = {}
    for part, options in part_options().items():
        keys = [o.name.lower() for o in options]
        if part == "top":
            keys = [(top_kind(o), name) for o, name in zip(options, keys)]
            values = list(zip(frame["top_kind"], frame["top"]))
        else:
            values = list(frame[part])
        where = {key: k for k, key in enumerate(keys)}
        unknown = sorted({str(v) for v in values if v not in where})
        if unknown:
            raise ValueError(f"avatar manifest: {part} {unknown} not among python-avatars' options")
        indices[part] = np.array([where[v] for v in values])
    return indices


def _groups(root) -> dict:
    """The SVG elements of LAYER_GROUPS. python-avatars prefixes ids with the file they came from: the
    template's own groups are "transparent_<name>", the top's facial-hair and accessory slots "<top>_<name>"."""
    found = {}
    for element in root.iter():
        element_id = element.get("id") or ""
        for name in LAYER_GROUPS:
            if element_id == "transparent_" + name or (
                    name in ("Facial-Hair", "Accessory") and element_id.endswith("_" + name)
                    and not element_id.startswith("transparent_")):
                found[name] = element
    return found


def layer_of(attributes: dict, group: str, size: int) -> tuple[np.ndarray, set[str]]:
    """One group of the avatar alone, premultiplied RGBA float32 (size, size, 4) in [0, 1], and the
    groups the avatar's SVG holds (a top without a facial-hair slot draws no beard). Every other group
    is drawn at opacity 0, so masks and ids stay as in the whole avatar."""
    ElementTree.register_namespace("", "http://www.w3.org/2000/svg")
    ElementTree.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    root = ElementTree.fromstring(avatar_svg(attributes).encode())
    groups = _groups(root)
    kept = groups[group]
    for name, element in groups.items():
        if element is not kept:
            element.set("opacity", "0")
    if group in ("Facial-Hair", "Accessory"):   # inside Top: show Top, hide what it draws besides the slot
        groups["Top"].set("opacity", "1")

        def hide_beside(node) -> None:
            for child in node:
                if child is kept:
                    continue
                if any(descendant is kept for descendant in child.iter()):
                    hide_beside(child)
                else:
                    child.set("opacity", "0")
        hide_beside(groups["Top"])
    image = rasterise(ElementTree.tostring(root, encoding="unicode"), size, background=None)
    return np.asarray(image, np.float32) / 255, set(groups)


def _layer_job(job: tuple) -> tuple[np.ndarray, set[str]]:
    attributes, group, size = job
    return layer_of(attributes, group, size)


def layer_jobs() -> dict[str, tuple[list, tuple[int, ...]]]:
    """Every layer to rasterise: {array name: (jobs, array shape before the pixels)}."""
    options = part_options()
    import python_avatars as pa

    # what the other parts stand at while one part's layer is drawn: a top with both slots, no beard or glasses
    base = {name: opts[0] for name, opts in options.items()} | {
        "top": pa.HairType.SHORT_FLAT, "facial_hair": pa.FacialHairType.NONE, "accessory": pa.AccessoryType.NONE}
    jobs: dict[str, tuple[list, tuple[int, ...]]] = {}

    def grid(name: str, group: str, axes: tuple[str, ...]) -> None:
        combos = [[]]
        for axis in axes:
            combos = [c + [(axis, o)] for c in combos for o in options[axis]]
        jobs[name] = ([(base | dict(c), group) for c in combos], tuple(len(options[a]) for a in axes))

    grid("skin_color", "Body", ("skin_color",))
    grid("clothing", "Clothing", ("clothing", "clothing_color"))
    for part, group in (("mouth", "Mouth"), ("nose", "Nose"), ("eyes", "Eyes"), ("eyebrows", "Eyebrow")):
        grid(part, group, (part,))
    grid("top_hair", "Top", ("top", "hair_color"))   # a hair top takes the hair colour ...
    grid("top_hat", "Top", ("top", "hat_color"))     # ... a hat the hat colour
    grid("facial_hair", "Facial-Hair", ("facial_hair", "facial_hair_color"))
    grid("accessory", "Accessory", ("accessory",))
    return jobs


def render_layers(size: int, workers: int = 1) -> dict[str, np.ndarray]:
    """Every part option as a premultiplied RGBA layer, uint8 (..., 4, size, size), and per top whether it
    takes the hair colour (else the hat colour), has a facial-hair slot, an accessory slot."""
    import python_avatars as pa

    jobs = layer_jobs()
    # a top's layer depends on the hair colour or the hat colour, never both: rasterise only that grid
    tops = part_options()["top"]
    is_hair = np.array([isinstance(t, pa.HairType) for t in tops])
    flat = []
    for name, (items, shape) in jobs.items():
        keep = np.ones(len(items), bool)
        if name in ("top_hair", "top_hat"):
            keep = np.repeat(is_hair if name == "top_hair" else ~is_hair, shape[1])
        flat += [(name, index, (attributes, group, size)) for index, ((attributes, group), k)
                 in enumerate(zip(items, keep)) if k]
    calls = [job for _, _, job in flat]
    if workers > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            drawn = list(tqdm(pool.map(_layer_job, calls, chunksize=16), total=len(calls),
                              desc="avatar layers", unit="layer", mininterval=2))
    else:
        drawn = [_layer_job(call) for call in calls]
    arrays = {name: np.zeros((*shape, 4, size, size), np.uint8) for name, (_, shape) in jobs.items()}
    top_groups = {}
    for (name, index, job), (layer, groups) in zip(flat, drawn):
        target = arrays[name].reshape(-1, 4, size, size)
        target[index] = np.round(layer.transpose(2, 0, 1) * 255).astype(np.uint8)
        if name.startswith("top_"):
            top_groups[tops.index(job[0]["top"])] = groups
    arrays["top_is_hair"] = is_hair
    arrays["top_has_facial_hair"] = np.array([("Facial-Hair" in top_groups[k]) for k in range(len(tops))])
    arrays["top_has_accessory"] = np.array([("Accessory" in top_groups[k]) for k in range(len(tops))])
    return arrays


LAYERS_FILE = "layers.npz"


def load_layers(folder) -> dict[str, np.ndarray]:
    """render_layers' arrays as the render_avatars stage saved them in the avatars' folder."""
    path = folder / LAYERS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro render_avatars` (it writes the avatar "
                                "parts' layers DTN's parts generator draws with)")
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


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
                        **part_columns(attributes),
                        "glasses": int(attributes["accessory"].name not in NOT_GLASSES),
                        "hat": int(attributes["top"].name in HAT_NAMES)})
    frame = assign_splits(pd.DataFrame.from_records(records), params.split, params.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image_set(out_dir, frame, np.stack(images))
    np.savez_compressed(out_dir / LAYERS_FILE, **render_layers(params.size, params.workers))
    return quality
