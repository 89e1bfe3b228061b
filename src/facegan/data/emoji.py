"""Noto emoji importer: google_64/<file>.png listed in google_64.csv (file, short_name, subcategory, skin_tone).

The emoji are RGBA; they are flattened onto white, as they are seen.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from facegan.config import SourceParams
from facegan.data.images import decode
from facegan.data.quality import DataError, SetQuality

LIST_FILE = "google_64.csv"
IMAGE_DIR = "google_64"
COLUMNS = ("file", "short_name", "subcategory", "skin_tone")


def import_emoji(src: Path, out: Path, source: SourceParams, seed: int) -> tuple[pd.DataFrame, SetQuality]:
    quality = SetQuality("emoji")
    if not (src / LIST_FILE).exists():
        raise DataError(f"emoji: {src / LIST_FILE} not found")
    listing = pd.read_csv(src / LIST_FILE, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in listing.columns]
    if missing:
        raise DataError(f"{src / LIST_FILE}: lacks columns {missing}")
    if source.max_images:
        listing = listing.head(source.max_images)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for row in listing.to_dict("records"):
        quality.read += 1
        image, reason = decode(src / IMAGE_DIR / row["file"])
        if image is None:
            quality.skip(row["file"], reason)
            continue
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        name = Path(row["file"]).stem + ".png"
        flat.save(out / "images" / name)
        quality.kept += 1
        records.append({"path": f"images/{name}", "identity": row["short_name"],
                        "subcategory": row["subcategory"], "skin_tone": row["skin_tone"] or "none"})
    return pd.DataFrame.from_records(records), quality
