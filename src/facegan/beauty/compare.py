"""Which rating set judges beauty better: each set's judge scores the other set's faces.

Each judge is fit as the stage fits it (stage.judge_set) and scored on the other set's held-out faces
(SCUT's official test faces; every London face) by Spearman's rho against that set's crowd means, beside
the other set's own judge on the same faces from models that never saw them (London: 10-fold
cross-validation; SCUT: fit on the official training faces). Spearman, not Pearson: the two sets rate on
different scales (1-7, 1-5). Also per sex, because the sets' crowds weigh sex differently (London's
raters put its women 0.7 points above its men; SCUT's labels put women 0.16 above men), and an overall
rho mixes that gap into the ranking."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from facegan.beauty.predictors import pearson, spearman
from facegan.beauty.stage import SetJudge, judge_set


def face_sex(frame) -> np.ndarray:
    """'female' | 'male' | '' per face: London's `face_sex`, SCUT's `sex`, else SCUT's file names (AF, CF)."""
    for column in ("face_sex", "sex"):
        if column in frame:
            return frame[column].fillna("").astype(str).str.lower().to_numpy()
    group = frame["path"].astype(str).str.extract(r"(?:^|/)([AC][FM])\d+")[0].fillna("")
    return group.map({"AF": "female", "CF": "female", "AM": "male", "CM": "male"}).fillna("").to_numpy()


def agreement(beauty: np.ndarray, crowd: np.ndarray, sex: np.ndarray) -> dict:
    out = {"faces": int(len(crowd)), "spearman": spearman(beauty, crowd), "pearson": pearson(beauty, crowd)}
    for group in ("female", "male"):
        rows = sex == group
        if rows.sum() > 2:
            out[f"spearman_{group}"] = spearman(beauty[rows], crowd[rows])
    return out


def cross_figures(judge: SetJudge, other: SetJudge) -> dict:
    """`judge` on `other`'s held-out faces, beside `other`'s own held-out judge on the same faces."""
    rows = other.held_out
    crowd, sex = other.crowd[rows], face_sex(other.frame)[rows]
    return {"judge": judge.params.set, "faces_of": other.params.set,
            "cross": agreement(judge.ensemble.beauty(other.descriptors[rows]), crowd, sex),
            "own": agreement(other.held_out_beauty, crowd, sex)}


def compare_judges(params, align, root: Path, sets=("london", "scut")) -> dict:
    """Both directions for two rating sets (each needs ingest, align and features); `params.race` applies
    to `params.set` alone."""
    judges = [judge_set(dataclasses.replace(params, set=name, race=params.race if name == params.set else ""),
                        align, Path(root)) for name in sets]
    return {f"{a.params.set}_judge_on_{b.params.set}": cross_figures(a, b)
            for a, b in ((judges[0], judges[1]), (judges[1], judges[0]))}
