"""SCUT-FBP5500 importer: Images/*.jpg + All_Ratings.xlsx (60 raters, 1..5).

All_Ratings.xlsx as released: a sheet "ALL" (else the first sheet) in long
form with columns Rater, Filename, Rating (and `original Rating`, unused).
File names carry the group: A/C (Asian/Caucasian) then F/M.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from facegan.config import SourceParams
from facegan.data.images import import_image
from facegan.data.quality import DataError, SetQuality
from facegan.data.ratings import rater_ids, write_ratings

RATINGS_FILE = "All_Ratings.xlsx"
REQUIRED = ("Rater", "Filename", "Rating")
KNOWN = REQUIRED + ("original Rating",)
RATING_RANGE = (1, 5)


def read_long_ratings(path: Path, quality: SetQuality) -> pd.DataFrame:
    sheets = pd.read_excel(path, sheet_name=None)
    frame = sheets.get("ALL", next(iter(sheets.values())))
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: sheet lacks columns {missing}; found {list(frame.columns)}")
    for column in frame.columns:
        if column not in KNOWN:
            quality.skip(f"{path.name}:column {column!r}", "unknown_column", f"expected {', '.join(KNOWN)}")
    frame = frame[list(REQUIRED)].copy()
    frame["Rating"] = pd.to_numeric(frame["Rating"], errors="coerce")
    bad = frame["Rating"].isna() | ~frame["Rating"].between(*RATING_RANGE)
    if bad.any():
        quality.note("invalid_or_missing_rating", int(bad.sum()))
    return frame[~bad]


def import_scut(src: Path, out: Path, source: SourceParams, seed: int) -> tuple[pd.DataFrame, SetQuality]:
    quality = SetQuality("scut")
    if not (src / RATINGS_FILE).exists() or not (src / "Images").is_dir():
        raise DataError(f"scut: expected {src / 'Images'}/ and {src / RATINGS_FILE} (the SCUT-FBP5500 release layout)")
    long = read_long_ratings(src / RATINGS_FILE, quality)
    wide = long.pivot_table(index="Filename", columns="Rater", values="Rating", aggfunc="mean")
    raters = pd.DataFrame({"source_rater": list(wide.columns)})
    raters.insert(0, "rater_id", rater_ids(len(raters)))
    wide.columns = raters["rater_id"].tolist()
    missing_cells = int(wide.isna().sum().sum())
    if missing_cells:
        quality.note("missing_rating", missing_cells)
    images = sorted(p for p in (src / "Images").iterdir() if p.is_file())
    if source.max_images:
        images = images[: source.max_images]
    records = []
    for path in images:
        quality.read += 1
        if path.name not in wide.index:
            quality.skip(path.name, "image_without_ratings")
            continue
        stored = import_image(path, out / "images", quality, path.name)
        if stored is None:
            continue
        quality.kept += 1
        group = path.stem[:2].upper()
        records.append({
            "path": f"images/{stored}", "identity": path.stem,
            "race": {"A": "asian", "C": "caucasian"}.get(group[:1], "unknown"),
            "sex": {"F": "female", "M": "male"}.get(group[1:2], "unknown"),
            "mean_rating": float(wide.loc[path.name].mean()),
        })
    for name in sorted(set(wide.index) - {p.name for p in images}):
        if not source.max_images:
            quality.read += 1
            quality.skip(name, "ratings_without_image")
    ratings = wide.loc[[p.name for p in images if p.name in wide.index]]
    ratings.index = [Path(n).stem for n in ratings.index]
    write_ratings(out, ratings, raters)
    quality.note("raters", len(raters))
    return pd.DataFrame.from_records(records), quality


