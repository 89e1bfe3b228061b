"""Multi-PIE importer: `<person>/<person>_<session>_<recording>_<camera>_<flash>[_anything].png`.

The public Multi-PIE naming (Gross et al. 2010) with the crops circulated with
CR-GAN / TP-GAN re-implementations. The camera decides the yaw; camera 051 is
the frontal one. Files are read in name order, so `max_images` keeps whole
people first (13 cameras x 6 flashes = 78 files each in the mirror's subset).

TP-GAN's training pairs: every image (any yaw) -> the frontal image (camera 051)
of the same person, session, recording and flash (`frontal_pairs`).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from PIL import Image

from facegan.config import SourceParams
from facegan.data.images import decode
from facegan.data.quality import DataError, SetQuality

FRONTAL_CAMERA = "051"
# Multi-PIE's 13 cameras at head height, left profile to right profile (degrees of yaw).
CAMERA_YAW = {"110": -90, "120": -75, "090": -60, "080": -45, "130": -30, "140": -15, "051": 0,
              "050": 15, "041": 30, "190": 45, "200": 60, "010": 75, "240": 90}
NAME = re.compile(r"^(?P<person>\d{3})_(?P<session>\d{2})_(?P<recording>\d{2})_(?P<camera>\d{3})_(?P<flash>\d{2})"
                  r"(?:_.*)?$")


def parse_name(stem: str) -> dict | None:
    """The fields of a Multi-PIE file stem, or None when it does not follow the naming."""
    match = NAME.match(stem)
    return match.groupdict() if match else None


def camera_to_yaw(camera: str) -> int:
    if camera not in CAMERA_YAW:
        raise KeyError(f"camera {camera!r} is not one of Multi-PIE's 13 head-height cameras {sorted(CAMERA_YAW)}")
    return CAMERA_YAW[camera]


def import_multipie(src: Path, out: Path, source: SourceParams, seed: int) -> tuple[pd.DataFrame, SetQuality]:
    quality = SetQuality("multipie")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise DataError(f"multipie: no images under {src} (expected <person>/<person>_<session>_<recording>_"
                        f"<camera>_<flash>*.png)")
    if source.max_images:
        files = files[:source.max_images]
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for path in files:
        quality.read += 1
        relative = str(path.relative_to(src))
        fields = parse_name(path.stem)
        if fields is None:
            quality.skip(relative, "name_not_multipie")
            continue
        if fields["camera"] not in CAMERA_YAW:
            quality.skip(relative, "camera_not_at_head_height")
            continue
        image, reason = decode(path)
        if image is None:
            quality.skip(relative, reason)
            continue
        name = path.stem + ".png"
        image.convert("RGB").save(out / "images" / name)
        quality.kept += 1
        records.append({"path": f"images/{name}", "identity": fields["person"], **fields,
                        "yaw": camera_to_yaw(fields["camera"])})
    return pd.DataFrame.from_records(records), quality


def frontal_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """(input row, frontal row) index pairs: each image -> camera 051 of the same person, session,
    recording and flash. Images whose frontal partner is missing get no pair (counted by the caller)."""
    key = ["identity", "session", "recording", "flash"]
    frame = frame.astype({c: str for c in key}).reset_index(drop=True)   # a manifest read back has 51 for "051"
    frontal = frame[frame["camera"].astype(int) == int(FRONTAL_CAMERA)].reset_index().rename(columns={"index": "frontal_row"})
    if frontal.duplicated(key).any():
        raise DataError(f"multipie: several frontal images for one {'/'.join(key)}: "
                        f"{frontal[frontal.duplicated(key, keep=False)]['path'].tolist()[:4]}")
    merged = frame.reset_index().rename(columns={"index": "input_row"}).merge(
        frontal[key + ["frontal_row"]], on=key, how="inner")
    return merged[["input_row", "frontal_row", "identity", "yaw"]].sort_values("input_row").reset_index(drop=True)
