"""One beauty predictor PER RATER (Beholder-GAN's semi-supervised step).

Beholder-GAN conditions its generator on the vector of every rater's score, so
each rater k gets a model of their own taste: ridge regression from a face
descriptor x to that rater's rating,

    w_k = argmin_w ||y_k - (X - mu) / sigma w - b_k||^2 + alpha_k ||w||^2,

with alpha_k chosen for that rater alone by exact leave-one-out error over the
penalty grid (closed form from one SVD of the standardised descriptors: the
LOO residual of ridge is e_i / (1 - H_ii)). The K models share only the
standardisation of x; their weights, intercepts and penalties are separate.
With ~100 rated faces a linear model on a strong pretrained descriptor is what
the data can carry; deeper regressors overfit.

The rule for the K raters (documented, seeded): of the raters who rated every
face and did not give one constant rating, K are drawn without replacement with
numpy's default_rng(seed). A random sample keeps the spread of tastes that is
the point of conditioning on a vector instead of a mean.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facegan.data.quality import DataError

MODEL_FILE = "predictors.npz"


def select_raters(ratings: pd.DataFrame, k: int, seed: int) -> list[str]:
    """K rater columns: a seeded sample of the raters with a rating, not all equal, for every face."""
    complete = ratings.columns[ratings.notna().all(axis=0).to_numpy()]
    varied = [r for r in complete if ratings[r].std() > 0]
    if len(varied) < k:
        raise DataError(f"beauty.raters = {k}, but only {len(varied)} of {ratings.shape[1]} raters rated all "
                        f"{len(ratings)} faces with more than one value; lower beauty.raters")
    chosen = np.random.default_rng(seed).choice(len(varied), size=k, replace=False)
    return [varied[i] for i in sorted(chosen)]


@dataclass
class Standardiser:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        return cls(x.mean(0), x.std(0) + 1e-8)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


@dataclass
class RaterRidge:
    """One rater's predictor on standardised descriptors."""
    rater: str
    weights: np.ndarray
    bias: float
    alpha: float
    loo_mse: float


class RidgeBasis:
    """The SVD of standardised training descriptors, shared by the K separate fits."""

    def __init__(self, z: np.ndarray):
        self.u, self.s, self.vt = np.linalg.svd(z, full_matrices=False)
        self.n = len(z)

    def fit(self, rater: str, y: np.ndarray, alphas: list[float]) -> RaterRidge:
        y = np.asarray(y, np.float64)
        bias = float(y.mean())
        centred = y - bias
        projected = self.u.T @ centred
        best = None
        for alpha in alphas:
            shrink = self.s ** 2 / (self.s ** 2 + alpha)
            fitted = self.u @ (shrink * projected)
            leverage = (self.u ** 2) @ shrink + 1.0 / self.n          # + the intercept's leverage
            loo = (centred - fitted) / np.maximum(1 - leverage, 1e-9)
            mse = float((loo ** 2).mean())
            if best is None or mse < best[0]:
                best = (mse, alpha)
        mse, alpha = best
        weights = self.vt.T @ (self.s / (self.s ** 2 + alpha) * projected)
        return RaterRidge(rater, weights, bias, float(alpha), mse)


class RaterEnsemble:
    """K per-rater predictors; `predict` gives (N, K), `beauty` their mean."""

    def __init__(self, standardiser: Standardiser, models: list[RaterRidge], descriptor: str,
                 scale: tuple[float, float]):
        self.standardiser, self.models, self.descriptor, self.scale = standardiser, models, descriptor, scale

    @property
    def raters(self) -> list[str]:
        return [m.rater for m in self.models]

    @classmethod
    def fit(cls, descriptors: np.ndarray, ratings: np.ndarray, raters: list[str], alphas: list[float],
            descriptor: str, scale: tuple[float, float]) -> "RaterEnsemble":
        """ratings (N, K): column k is rater k's scores of the N faces."""
        standardiser = Standardiser.fit(descriptors)
        basis = RidgeBasis(standardiser(descriptors))
        models = [basis.fit(rater, ratings[:, k], alphas) for k, rater in enumerate(raters)]
        return cls(standardiser, models, descriptor, scale)

    @classmethod
    def fit_crowd_offset(cls, descriptors: np.ndarray, labels: np.ndarray, rated: np.ndarray, ratings: np.ndarray,
                         raters: list[str], alphas: list[float], descriptor: str,
                         scale: tuple[float, float]) -> "RaterEnsemble":
        """Each rater as the crowd's mean plus a learned offset (ours; Beholder-GAN fits each rater alone):
        rater k's score ~ m(x) + o_k(x), m a ridge on every face's crowd mean `labels` (N,), o_k a ridge on
        rater k's deviation from it over the rated faces (`rated`: their rows, (M,); ratings (M, K)). Both
        are linear in the same standardised descriptors, so each rater is again one RaterRidge (w_m + w_k,
        b_m + b_k), and faces no rater saw still teach m. The crowd model's penalty and each offset's are
        chosen by their own leave-one-out error."""
        standardiser = Standardiser.fit(descriptors)
        z = standardiser(descriptors)
        crowd = RidgeBasis(z).fit("crowd", labels, alphas)
        offsets = RidgeBasis(z[rated])
        models = []
        for k, rater in enumerate(raters):
            own = offsets.fit(rater, ratings[:, k] - labels[rated], alphas)
            models.append(RaterRidge(rater, crowd.weights + own.weights, crowd.bias + own.bias, own.alpha,
                                     own.loo_mse))
        return cls(standardiser, models, descriptor, scale)

    def predict(self, descriptors: np.ndarray, clip: bool = False) -> np.ndarray:
        z = self.standardiser(np.asarray(descriptors, np.float64))
        out = np.stack([z @ m.weights + m.bias for m in self.models], axis=1)
        return np.clip(out, *self.scale) if clip else out

    def beauty(self, descriptors: np.ndarray) -> np.ndarray:
        """The ensemble's beauty: the mean of the K raters' predicted scores."""
        return self.predict(descriptors).mean(1)

    # ---------------------------------------------------------------- files
    def save(self, folder: Path, meta: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / MODEL_FILE, raters=np.array(self.raters), mean=self.standardiser.mean,
                 scale=self.standardiser.scale, weights=np.stack([m.weights for m in self.models]),
                 bias=np.array([m.bias for m in self.models]), alpha=np.array([m.alpha for m in self.models]),
                 loo_mse=np.array([m.loo_mse for m in self.models]),
                 rating_scale=np.array(self.scale, np.float64), descriptor=np.array(self.descriptor))
        (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "RaterEnsemble":
        path = Path(folder) / MODEL_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro beauty`")
        with np.load(path, allow_pickle=False) as f:
            models = [RaterRidge(str(r), w, float(b), float(a), float(e))
                      for r, w, b, a, e in zip(f["raters"], f["weights"], f["bias"], f["alpha"], f["loo_mse"])]
            return cls(Standardiser(f["mean"], f["scale"]), models, str(f["descriptor"]),
                       tuple(float(v) for v in f["rating_scale"]))


# ---------------------------------------------------------------- evaluation
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def fold_of_each(n: int, folds: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    assignment = np.empty(n, int)
    assignment[order] = np.arange(n) % folds
    return assignment


def cross_validate(descriptors: np.ndarray, ratings: np.ndarray, raters: list[str], crowd_mean: np.ndarray,
                   alphas: list[float], folds: int, seed: int, descriptor: str,
                   scale: tuple[float, float], fit=None) -> tuple[dict, np.ndarray]:
    """K-fold over faces: every face is predicted by models that never saw it. `fit(rows)` -> a
    RaterEnsemble on those rows (default: RaterEnsemble.fit, one ridge per rater).

    Returns the figures and the out-of-fold (N, K) predictions."""
    assignment = fold_of_each(len(ratings), folds, seed)
    predicted = np.zeros_like(ratings, dtype=np.float64)
    for fold in range(folds):
        train, test = assignment != fold, assignment == fold
        ensemble = (fit(np.flatnonzero(train)) if fit is not None else
                    RaterEnsemble.fit(descriptors[train], ratings[train], raters, alphas, descriptor, scale))
        predicted[test] = ensemble.predict(descriptors[test])
    per_rater = np.array([pearson(predicted[:, k], ratings[:, k]) for k in range(len(raters))])
    ensemble_beauty = predicted.mean(1)
    return {
        "cv_folds": folds,
        "per_rater_r_median": float(np.median(per_rater)),
        "per_rater_r_q25": float(np.quantile(per_rater, 0.25)),
        "per_rater_r_q75": float(np.quantile(per_rater, 0.75)),
        "per_rater_r_min": float(per_rater.min()),
        "per_rater_r_max": float(per_rater.max()),
        "ensemble_r": pearson(ensemble_beauty, crowd_mean),
        "ensemble_mae": float(np.abs(ensemble_beauty - crowd_mean).mean()),
        "ensemble_r_vs_k_raters_mean": pearson(ensemble_beauty, ratings.mean(1)),
    }, predicted


def rater_agreement(all_ratings: np.ndarray, chosen: list[int]) -> np.ndarray:
    """Pearson r of each chosen rater with the mean of all OTHER raters: how far one
    person's taste follows the crowd, the human reference for a per-rater model."""
    total, counts = np.nansum(all_ratings, 1), np.sum(~np.isnan(all_ratings), 1)
    out = []
    for k in chosen:
        own = all_ratings[:, k]
        rest = (total - np.nan_to_num(own)) / np.maximum(counts - (~np.isnan(own)), 1)
        out.append(pearson(own, rest))
    return np.array(out)
