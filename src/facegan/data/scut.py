"""SCUT-FBP5500 importer (Liang et al., ICPR 2018): Images/*.jpg, per-rater ratings, the official labels.

Per-rater ratings come from either source, whichever is present (the full release's first):
- `All_Ratings.xlsx` as released: a sheet "ALL" (else the first sheet) in long form with columns
  Rater, Filename, Rating (and `original Rating`, unused); all 5,500 faces, 60 raters.
- `All_Ratings_v1/*.csv`, the first public release's files: columns Email (the rater, 1-60),
  Filename, Rating, `original Rating`, and an empty fifth column from each row's trailing comma.
  Their names are v1's: ftw<N> = CF<N>, mtw<N> = CM<N>, fty<N> = AF<N>, mty<N> = AM<N>, the number
  unchanged (MIRROR_NOTES.md of the mirror states the rule; the importer checks it by the means below).

`train_test_files/All_labels.txt` (every face's mean of the 60 raters) and the official 60/40 split
(`split_of_60%training and 40%testing/{train,test}.txt`) are read when present: every image with a label
is kept, rated or not (`rated`, `raters` and `official_split` columns; `mean_rating` is the official
label), since the labels alone still train or check a judge. What is counted in data_quality.json:
rows with an unknown file name, ratings outside 1-5 or missing, repeated (rater, face) pairs (the first
kept), faces rated by fewer raters than the most, faces whose raters' mean differs from the official
label by more than 1e-3, images without per-rater ratings, and ratings or labels without an image.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from facegan.config import SourceParams
from facegan.data.images import import_image
from facegan.data.quality import DataError, SetQuality
from facegan.data.ratings import rater_ids, write_ratings

RATINGS_FILE = "All_Ratings.xlsx"
V1_FOLDER = "All_Ratings_v1"
V1_PREFIXES = {"ftw": "CF", "mtw": "CM", "fty": "AF", "mty": "AM"}
V1_NAME = re.compile(r"^(ftw|mtw|fty|mty)(\d+)\.jpg$", re.IGNORECASE)
V2_NAME = re.compile(r"^(AF|AM|CF|CM)\d+\.jpg$")
LABELS_FILE = Path("train_test_files") / "All_labels.txt"
SPLIT_FOLDER = Path("train_test_files") / "split_of_60%training and 40%testing"
REQUIRED = ("Rater", "Filename", "Rating")
KNOWN = REQUIRED + ("original Rating",)
RATING_RANGE = (1, 5)
LABEL_TOLERANCE = 1e-3


def v2_name(name: str) -> str | None:
    """The v2 file name of a v1 one (ftw12.jpg -> CF12.jpg); v2 names pass unchanged; None if neither."""
    name = str(name).strip()
    if V2_NAME.match(name):
        return name
    found = V1_NAME.match(name)
    return f"{V1_PREFIXES[found.group(1).lower()]}{found.group(2)}.jpg" if found else None


def read_xlsx_ratings(path: Path, quality: SetQuality) -> pd.DataFrame:
    sheets = pd.read_excel(path, sheet_name=None)
    frame = sheets.get("ALL", next(iter(sheets.values())))
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: sheet lacks columns {missing}; found {list(frame.columns)}")
    for column in frame.columns:
        if column not in KNOWN:
            quality.skip(f"{path.name}:column {column!r}", "unknown_column", f"expected {', '.join(KNOWN)}")
    frame = frame[list(REQUIRED)].copy()
    frame["row"] = [f"{path.name}:{i + 2}" for i in range(len(frame))]
    return frame


def read_v1_ratings(folder: Path, quality: SetQuality) -> pd.DataFrame:
    """The v1 CSVs in long form (Rater, Filename as in v1, Rating, row), in file-name order."""
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise DataError(f"{folder}: no *.csv ratings files")
    parts = []
    for path in files:
        frame = pd.read_csv(path, index_col=False, dtype=str, keep_default_na=False)
        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [c for c in ("Email", "Filename", "Rating") if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: lacks columns {missing}; found {list(frame.columns)}")
        frame = frame.rename(columns={"Email": "Rater"})
        frame["row"] = [f"{V1_FOLDER}/{path.name}:{i + 2}" for i in range(len(frame))]
        parts.append(frame[list(REQUIRED) + ["row"]])
    return pd.concat(parts, ignore_index=True)


def clean_ratings(long: pd.DataFrame, quality: SetQuality) -> pd.DataFrame:
    """Long ratings with v2 names, valid 1-5 ratings and one rating per (rater, face); every dropped row
    is skipped by name with its reason."""
    long = long.copy()
    long["Filename"] = [v2_name(n) for n in long["Filename"]]
    long["Rating"] = pd.to_numeric(long["Rating"], errors="coerce")
    long["Rater"] = long["Rater"].astype(str).str.strip()
    checks = [("unknown_file_name", long["Filename"].isna(), "not a SCUT-FBP5500 v1 or v2 name"),
              ("invalid_or_missing_rating", long["Rating"].isna() | ~long["Rating"].between(*RATING_RANGE),
               f"ratings are {RATING_RANGE[0]}-{RATING_RANGE[1]}"),
              ("missing_rater", long["Rater"].isin(["", "nan"]), "no rater id")]
    bad = pd.Series(False, index=long.index)
    for reason, rows, detail in checks:
        rows = rows & ~bad
        for item in long.loc[rows, "row"]:
            quality.skip(item, reason, detail)
        bad |= rows
    long = long[~bad]
    repeated = long.duplicated(["Rater", "Filename"], keep="first")
    for item, rater, name in long.loc[repeated, ["row", "Rater", "Filename"]].itertuples(index=False):
        quality.skip(item, "duplicate_rating", f"rater {rater} rated {name} before; the first rating is kept")
    return long[~repeated]


def read_labels(src: Path) -> tuple[pd.Series, pd.Series]:
    """Official mean labels by v2 file name, and the official 60/40 split ('train'/'test') by name; empty
    when the release's files are not there."""
    labels, split = pd.Series(dtype=float), pd.Series(dtype=str)
    if (src / LABELS_FILE).exists():
        table = pd.read_csv(src / LABELS_FILE, sep=r"\s+", header=None, names=["name", "label"])
        labels = table.set_index("name")["label"].astype(float)
    for part in ("train", "test"):
        path = src / SPLIT_FOLDER / f"{part}.txt"
        if path.exists():
            names = pd.read_csv(path, sep=r"\s+", header=None, usecols=[0])[0]
            split = pd.concat([split, pd.Series(part, index=names.to_numpy())])
    return labels, split


def import_scut(src: Path, out: Path, source: SourceParams, seed: int) -> tuple[pd.DataFrame, SetQuality]:
    quality = SetQuality("scut")
    if not (src / "Images").is_dir():
        raise DataError(f"scut: expected {src / 'Images'}/ (the SCUT-FBP5500 release layout)")
    if (src / RATINGS_FILE).exists():
        long = read_xlsx_ratings(src / RATINGS_FILE, quality)
        quality.note("ratings_source_xlsx")
    elif (src / V1_FOLDER).is_dir():
        long = read_v1_ratings(src / V1_FOLDER, quality)
        quality.note("ratings_source_v1_csv")
    else:
        raise DataError(f"scut: no per-rater ratings: expected {src / RATINGS_FILE} (the full release) or "
                        f"{src / V1_FOLDER}/*.csv (the first release's files)")
    long = clean_ratings(long, quality)
    wide = long.pivot_table(index="Filename", columns="Rater", values="Rating", aggfunc="first")
    wide = wide[sorted(wide.columns, key=lambda r: (len(r), r))]
    raters = pd.DataFrame({"source_rater": list(wide.columns)})
    raters.insert(0, "rater_id", rater_ids(len(raters)))
    wide.columns = raters["rater_id"].tolist()
    counts = wide.notna().sum(axis=1)
    labels, official = read_labels(src)

    images = sorted(p for p in (src / "Images").iterdir() if p.is_file())
    if source.max_images:
        images = images[: source.max_images]
    records, rated_names = [], []
    for path in images:
        quality.read += 1
        rated, labelled = path.name in wide.index, path.name in labels.index
        if not rated and not labelled:
            quality.skip(path.name, "image_without_ratings_or_label")
            continue
        stored = import_image(path, out / "images", quality, path.name)
        if stored is None:
            continue
        quality.kept += 1
        group = path.stem[:2].upper()
        mean = float(wide.loc[path.name].mean()) if rated else float("nan")
        if not rated:
            quality.note("image_without_ratings")
        else:
            if counts[path.name] < counts.max():
                quality.note("face_with_fewer_raters")
            if labelled and abs(mean - labels[path.name]) > LABEL_TOLERANCE:
                quality.note("raters_mean_differs_from_label")
        if rated:
            rated_names.append(path.name)
        records.append({
            "path": f"images/{stored}", "identity": path.stem,
            "race": {"A": "asian", "C": "caucasian"}.get(group[:1], "unknown"),
            "sex": {"F": "female", "M": "male"}.get(group[1:2], "unknown"),
            "mean_rating": float(labels[path.name]) if labelled else mean,
            "rated": rated, "raters": int(counts.get(path.name, 0)),
            "official_split": official.get(path.name, ""),
        })
    if not source.max_images:
        present = {p.name for p in images}
        for name in sorted(set(wide.index) - present):
            quality.read += 1
            quality.skip(name, "ratings_without_image")
        for name in sorted(set(labels.index) - present - set(wide.index)):
            quality.read += 1
            quality.skip(name, "label_without_image")
    ratings = wide.loc[rated_names]
    ratings.index = [Path(n).stem for n in ratings.index]
    write_ratings(out, ratings, raters)
    quality.note("raters", len(raters))
    quality.note("rated_faces", len(rated_names))
    return pd.DataFrame.from_records(records), quality
