"""Per-rater beauty ratings in one shape for every source (London, SCUT-FBP5500).

ratings.csv: one row per face (`identity`), one column per rater (`r0001`...),
NaN where a rater gave no rating; raters.csv: rater_id plus what the release
says of each rater.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_ratings(out: Path, ratings: pd.DataFrame, raters: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ratings.index.name = "identity"
    ratings.to_csv(out / "ratings.csv")
    raters.to_csv(out / "raters.csv", index=False)


def read_ratings(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(Path(folder) / "ratings.csv", dtype={"identity": str}).set_index("identity")
    raters = pd.read_csv(Path(folder) / "raters.csv")
    return ratings, raters


def rater_ids(n: int) -> list[str]:
    width = max(2, len(str(n)))
    return [f"r{i + 1:0{width}d}" for i in range(n)]
