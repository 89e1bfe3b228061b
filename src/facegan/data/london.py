"""Face Research Lab London Set importer.

neutral_front/NNN_03.jpg and smiling_front/NNN_08.jpg of the same people;
london_faces_ratings.csv (CR line endings as released): one row per rater,
columns rater_sex, rater_sexpref, rater_age, then XNNN = rating 1..7 of face
NNN's neutral photo; london_faces_info.csv: face_id, face_age, face_sex, face_eth.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from facegan.config import SourceParams
from facegan.data.images import import_image
from facegan.data.quality import DataError, SetQuality
from facegan.data.ratings import rater_ids, write_ratings

RATINGS_FILE = "london_faces_ratings.csv"
INFO_FILE = "london_faces_info.csv"
RATER_COLUMNS = ("rater_sex", "rater_sexpref", "rater_age")
FACE_COLUMN = re.compile(r"^X(\d{3})$")
EXPRESSIONS = {"neutral": ("neutral_front", "03"), "smiling": ("smiling_front", "08")}
RATING_RANGE = (1, 7)


def read_csv_rows(path: Path) -> list[list[str]]:
    """CSV rows whatever the line endings (the ratings file uses bare CR)."""
    text = path.read_text(encoding="utf-8-sig")
    return list(csv.reader(text.splitlines()))


def parse_rating(cell: str) -> tuple[float, str]:
    cell = cell.strip()
    if cell in ("", "NA", "NaN", "nan"):
        return math.nan, "missing_rating"
    try:
        value = float(cell)
    except ValueError:
        return math.nan, "invalid_rating"
    if not RATING_RANGE[0] <= value <= RATING_RANGE[1]:
        return math.nan, "invalid_rating"
    return value, ""


def read_ratings_table(path: Path, quality: SetQuality) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = read_csv_rows(path)
    if not rows:
        raise DataError(f"{path}: empty ratings file")
    header = rows[0]
    missing = [c for c in RATER_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: header lacks rater columns {missing}")
    face_cols: dict[int, str] = {}
    for index, name in enumerate(header):
        match = FACE_COLUMN.match(name)
        if match:
            face_cols[index] = match.group(1)
        elif name not in RATER_COLUMNS:
            quality.skip(f"{path.name}:column {name!r}", "unknown_column",
                         f"expected {', '.join(RATER_COLUMNS)} or XNNN")
    if not face_cols:
        raise DataError(f"{path}: no face columns (XNNN) in the header")
    rater_info, values = [], []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            quality.skip(f"{path.name}:line {number}", "malformed_rater_row",
                         f"{len(row)} fields, header has {len(header)}")
            continue
        parsed = [parse_rating(row[index]) for index in face_cols]
        if all(problem for _, problem in parsed):
            quality.skip(f"{path.name}:line {number}", "rater_without_ratings")
            continue
        for _, problem in parsed:
            if problem:
                quality.note(problem)
        ratings = [value for value, _ in parsed]
        rater_info.append({c: row[header.index(c)] for c in RATER_COLUMNS})
        values.append(ratings)
    ids = rater_ids(len(values))
    table = pd.DataFrame(np.array(values, dtype=float).T, index=list(face_cols.values()), columns=ids)
    raters = pd.DataFrame(rater_info)
    raters.insert(0, "rater_id", ids)
    return table, raters


def read_info(path: Path, quality: SetQuality) -> dict[str, dict]:
    if not path.exists():
        quality.note("no_face_info_file")
        return {}
    frame = pd.read_csv(path, dtype=str)
    info = {}
    for row in frame.to_dict("records"):
        match = FACE_COLUMN.match(str(row.get("face_id", "")))
        if match:
            info[match.group(1)] = {k: v for k, v in row.items() if k != "face_id"}
    return info


def import_london(src: Path, out: Path, source: SourceParams, seed: int) -> tuple[pd.DataFrame, SetQuality]:
    quality = SetQuality("london")
    if not (src / RATINGS_FILE).exists():
        raise DataError(f"london: {src / RATINGS_FILE} not found")
    ratings, raters = read_ratings_table(src / RATINGS_FILE, quality)
    info = read_info(src / INFO_FILE, quality)
    records = []
    faces = sorted({p.name.split("_")[0] for folder, _ in EXPRESSIONS.values()
                    for p in (src / folder).glob("*.jpg")} | set(ratings.index))
    if source.max_images:
        faces = faces[: max(1, source.max_images // 2)]
    for face in faces:
        for expression, (folder, code) in EXPRESSIONS.items():
            path = src / folder / f"{face}_{code}.jpg"
            if not path.exists():
                if expression == "neutral" and face in ratings.index:
                    quality.read += 1
                    quality.skip(f"X{face}", "ratings_without_image", str(path))
                continue
            quality.read += 1
            stored = import_image(path, out / "images" / expression, quality, f"{folder}/{path.name}")
            if stored is None:
                continue
            quality.kept += 1
            rated = expression == "neutral" and face in ratings.index
            if expression == "neutral" and not rated:
                quality.note("neutral_image_without_ratings")
            records.append({
                "path": f"images/{expression}/{stored}", "identity": face, "expression": expression,
                "mean_rating": float(ratings.loc[face].mean()) if rated else math.nan,
                **info.get(face, {}),
            })
    kept_faces = sorted({r["identity"] for r in records if r["expression"] == "neutral"})
    write_ratings(out, ratings.loc[[f for f in ratings.index if f in kept_faces]], raters)
    quality.note("raters", len(raters))
    return pd.DataFrame.from_records(records), quality
