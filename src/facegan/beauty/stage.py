"""Stages `beauty` (per-rater predictors on the rated faces) and `pseudo_label`
(they rate every aligned CelebA face: a K-vector beta per image)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facegan.beauty.predictors import (RaterEnsemble, cross_validate, pearson, rater_agreement,
                                      select_raters, spearman)
from facegan.data.pseudo_labels import pseudo_label_path
from facegan.data.quality import DataError, SetQuality, write_part

FACENET_DESCRIPTORS = {"facenet_pool": "pool", "facenet_embedding": "embedding"}


def model_folder(root: Path) -> Path:
    return Path(root) / "models" / "beauty"


class Describer:
    """Face descriptors the predictors read, from [-1, 1] aligned crops.

    FaceNet's 1792-d pooled features are the default: on London's 102 faces
    (10-fold CV, K = 60) they gave the best ensemble r (0.60, vs dlib's 128-d
    0.58 and FaceNet's 512-d embedding 0.53), they run batched on the CPU
    and they are differentiable. dlib is kept selectable. The stages read the
    real faces' FaceNet descriptors from the feature cache (`cached_descriptors`);
    this computes them for new images (generated or edited faces) the same way."""

    def __init__(self, kind: str, root: Path, device: str = "cpu", precision: str = "fp32",
                 batch_size: int = 64, eye_distance: float = 0.28, eye_y: float = 0.38):
        self.kind, self.device, self.batch_size, self.precision = kind, device, batch_size, precision
        self.eye_distance, self.eye_y = eye_distance, eye_y
        if kind in FACENET_DESCRIPTORS:
            from facegan.pretrained.facenet import checkpoint_path, load_facenet
            self.facenet = load_facenet(str(checkpoint_path(Path(root))), device)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) in [-1, 1] -> (N, D) float64."""
        from facegan.pretrained.features import facenet_features

        if self.kind == "dlib":
            return dlib_of(images, self.eye_distance, self.eye_y)
        features = facenet_features(self.facenet, images, self.precision, self.batch_size, self.device)
        return features[FACENET_DESCRIPTORS[self.kind]].astype(np.float64)


def cached_descriptors(kind: str, root: Path, name: str, images: np.ndarray, paths, align) -> np.ndarray:
    """The descriptors of stored set `name`'s images at `paths`: FaceNet's from the feature cache,
    dlib's computed (dlib is not cached)."""
    if kind == "dlib":
        from facegan.metrics.identity import dlib_descriptors

        return dlib_descriptors(images, align.eye_distance, align.eye_y)
    from facegan.pretrained.features import load_features

    key = FACENET_DESCRIPTORS[kind]
    return load_features(root, name, paths, kinds=(key,))[key].astype(np.float64)


def dlib_of(images: torch.Tensor, eye_distance: float, eye_y: float) -> np.ndarray:
    """dlib descriptors of [-1, 1] aligned crops."""
    from facegan.data.datasets import to_uint8
    from facegan.metrics.identity import dlib_descriptors

    return dlib_descriptors(to_uint8(images), eye_distance, eye_y)


def load_rated_faces(params, root: Path, quality: SetQuality):
    """The aligned faces of the rating set (one expression) joined to their ratings.

    A set with official labels for every face (SCUT-FBP5500: `official_split` and `mean_rating` in its
    manifest) keeps its faces without per-rater ratings too, with NaN ratings (their labels still train
    the crowd model and score the judge); elsewhere an aligned face without ratings is skipped. Either way
    faces rated but not aligned, or aligned but not rated, are counted, not dropped silently."""
    from facegan.data.datasets import load_images, set_folder
    from facegan.data.ratings import read_ratings

    folder = set_folder(root, params.set)
    if not (folder / "manifest.csv").exists() or not (root / "data" / "raw" / params.set / "ratings.csv").exists():
        raise DataError(f"beauty.set = {params.set}: {folder}/manifest.csv or data/raw/{params.set}/ratings.csv is "
                        f"missing; add {params.set} to ingest.sets, align.sets and features.sets")
    images, frame = load_images(folder)
    expression = params.expression if "expression" in frame else ""
    if expression:
        keep = (frame["expression"] == expression).to_numpy()
        images, frame = images[keep], frame[keep].reset_index(drop=True)
    ratings, raters = read_ratings(root / "data" / "raw" / params.set)
    if params.race:
        images, frame, ratings = of_race(params, root, images, frame, ratings, quality)
    quality.read = len(ratings)
    aligned = set(frame["identity"].astype(str))
    for face in ratings.index:
        if face not in aligned:
            quality.skip(face, "rated_face_not_aligned", f"no aligned {expression + ' ' if expression else ''}image")
    rated = frame["identity"].astype(str).isin(ratings.index).to_numpy()
    if has_official_labels(frame):
        quality.note("aligned_face_with_label_only", int((~rated).sum()))
    else:
        for path in frame.loc[~rated, "path"]:
            quality.skip(path, "aligned_face_without_ratings")
        images, frame = images[rated], frame[rated].reset_index(drop=True)
    quality.kept = len(frame)
    if len(frame) < max(params.folds, 10):
        raise DataError(f"beauty: only {len(frame)} rated {params.set} faces are aligned; need at least "
                        f"{max(params.folds, 10)}")
    return images, frame, ratings.reindex(frame["identity"].astype(str)), raters


def of_race(params, root: Path, images, frame, ratings, quality: SetQuality):
    """Only the faces of `params.race` (the release's own group label: SCUT-FBP5500's asian | caucasian)
    and their ratings; the others are counted as a note, not skipped (they are not this judge's data)."""
    from facegan.data.manifest import read_manifest

    raw = read_manifest(root / "data" / "raw" / params.set)
    if "race" not in raw:
        raise DataError(f"beauty.race = {params.race}: data/raw/{params.set}/manifest.csv has no race column; "
                        "set beauty.race: ''")
    groups = sorted(raw["race"].dropna().astype(str).unique())
    if params.race not in groups:
        raise DataError(f"beauty.race = {params.race}: {params.set} has {', '.join(groups)}")
    other = set(raw.loc[raw["race"].astype(str) != params.race, "identity"].astype(str))
    keep = ~frame["identity"].astype(str).isin(other).to_numpy()
    quality.note(f"faces_not_{params.race}_not_used", int(len(other)))
    return images[keep], frame[keep].reset_index(drop=True), ratings[~ratings.index.isin(other)]


def has_official_labels(frame) -> bool:
    """A set whose release gives every face a crowd-mean label and an official split (SCUT-FBP5500)."""
    return {"official_split", "mean_rating"} <= set(frame.columns)


def crowd_means(frame, ratings) -> np.ndarray:
    """Each face's crowd mean: the release's label where it gives one, else the mean of its raters."""
    if has_official_labels(frame):
        return frame["mean_rating"].to_numpy(np.float64)
    return np.nanmean(ratings.to_numpy(np.float64), 1)


def fit_judge(model: str, descriptors, crowd, ratings: np.ndarray, fit_rows, rated_rows, raters, alphas,
              descriptor, scale) -> RaterEnsemble:
    """`per_rater` (Beholder-GAN's): rater k's ridge on the faces k rated (rated_rows); `crowd_offset`
    (ours): the crowd mean's ridge on every face in fit_rows plus each rater's offset from it."""
    if model == "per_rater":
        return RaterEnsemble.fit(descriptors[rated_rows], ratings[rated_rows], raters, alphas, descriptor, scale)
    position = {row: i for i, row in enumerate(fit_rows)}
    return RaterEnsemble.fit_crowd_offset(descriptors[fit_rows], crowd[fit_rows],
                                          np.array([position[r] for r in rated_rows]), ratings[rated_rows],
                                          raters, alphas, descriptor, scale)


@dataclass
class SetJudge:
    """A rating set's judge and what it was measured on: `held_out` are the rows of faces the figures
    came from and `held_out_beauty` the ensemble beauty of each from a model that never saw it (the
    official test faces; under cross-validation, every face out of fold)."""
    params: object
    frame: object
    descriptors: np.ndarray
    crowd: np.ndarray
    ensemble: RaterEnsemble
    report: dict
    held_out: np.ndarray
    held_out_beauty: np.ndarray
    quality: SetQuality


def judge_set(params, align, root: Path) -> SetJudge:
    """K per-rater predictors on `params.set` and their figures.

    London: 10-fold cross-validation over its faces, the shipped judge fit on all of them. A set with
    official labels and split (SCUT-FBP5500): the judge is fit on the official training faces only and
    scored on the official test faces (the ensemble's Pearson r against the official mean labels, the
    field's figure; each rater's r on the test faces they rated), so the figures describe the shipped
    judge. Faces with fewer than all raters' ratings are left out of the per-rater fits and counted."""
    quality = SetQuality(params.set)
    images, frame, ratings, _ = load_rated_faces(params, root, quality)
    all_ratings = ratings.to_numpy(np.float64)
    crowd = crowd_means(frame, ratings)
    counts = (~np.isnan(all_ratings)).sum(1)
    complete = counts > 0
    if has_official_labels(frame):   # SCUT's v1 files end within two faces: 39 of the 60 raters
        complete = counts == counts.max()
        quality.note("face_with_fewer_raters_not_fit", int(((counts > 0) & ~complete).sum()))
    raters = select_raters(ratings[complete], params.raters, params.seed)
    chosen = [ratings.columns.get_loc(r) for r in raters]
    y = all_ratings[:, chosen]
    scale = (float(np.nanmin(all_ratings)), float(np.nanmax(all_ratings)))
    descriptors = cached_descriptors(params.descriptor, root, params.set, images, frame["path"], align)
    fit = functools.partial(fit_judge, params.model, descriptors, crowd, y, raters=raters, alphas=params.alphas,
                            descriptor=params.descriptor, scale=scale)

    if has_official_labels(frame):
        train = (frame["official_split"] == "train").to_numpy()
        test = (frame["official_split"] == "test").to_numpy()
        ensemble = fit(np.flatnonzero(train), np.flatnonzero(train & complete))
        report = official_split_figures(ensemble, descriptors, crowd, y, train, test, complete)
        held_out = np.flatnonzero(test)
        held_out_beauty = ensemble.beauty(descriptors[held_out])
    else:
        report, predicted = cross_validate(descriptors, y, raters, crowd, params.alphas, params.folds, params.seed,
                                           params.descriptor, scale, fit=lambda rows: fit(rows, rows))
        ensemble = fit(np.arange(len(frame)), np.arange(len(frame)))
        held_out, held_out_beauty = np.arange(len(frame)), predicted.mean(1)
    agreement = rater_agreement(all_ratings[complete], chosen)
    alphas = np.array([m.alpha for m in ensemble.models])
    report.update({
        "set": params.set, "faces": len(frame), "faces_rated": int(complete.sum()),
        "raters_total": int(ratings.shape[1]), "raters_used": len(raters), "model": params.model,
        "descriptor": params.descriptor, "descriptor_dim": int(descriptors.shape[1]),
        "rating_scale_min": scale[0], "rating_scale_max": scale[1],
        "held_out_spearman": spearman(held_out_beauty, crowd[held_out]),
        "rater_vs_rest_r_median": float(np.median(agreement)),
        "k_raters_mean_vs_crowd_r": float(np.corrcoef(y[complete].mean(1), crowd[complete])[0, 1]),
        "alpha_distinct": int(len(np.unique(alphas))), "alpha_median": float(np.median(alphas)),
    })
    return SetJudge(params, frame, descriptors, crowd, ensemble, report, held_out, held_out_beauty, quality)


def run_beauty(params, features, align, root: Path) -> dict:
    """Stage `beauty`: `params.set`'s judge -> models/beauty/ and its figures (judge_set).
    `features`: the feature cache's settings, recorded so the judge describes new faces as the cache did."""
    judge = judge_set(params, align, root)
    judge.ensemble.save(model_folder(root), {
        "set": params.set, "expression": params.expression, "descriptor": params.descriptor,
        "precision": features.precision, "batch_size": features.batch_size, "eye_distance": align.eye_distance,
        "eye_y": align.eye_y, "raters": judge.ensemble.raters, "model": params.model, "cv": judge.report})
    write_part(root / "reports" / "data_quality" / "beauty.json", "beauty", {params.set: judge.quality})
    return judge.report


def official_split_figures(ensemble: RaterEnsemble, descriptors, crowd, y, train, test, complete) -> dict:
    """The judge (fit on the official training faces) on the official test faces."""
    beauty = ensemble.beauty(descriptors[test])
    rated = complete[test]
    predicted = ensemble.predict(descriptors[test][rated])
    per_rater = np.array([pearson(predicted[:, k], y[test][rated][:, k]) for k in range(y.shape[1])])
    return {
        "protocol": "official 60/40 split", "train_faces": int(train.sum()), "test_faces": int(test.sum()),
        "train_faces_rated": int((train & complete).sum()), "test_faces_rated": int(rated.sum()),
        "ensemble_r": pearson(beauty, crowd[test]),
        "ensemble_mae": float(np.abs(beauty - crowd[test]).mean()),
        "ensemble_r_test_rated": pearson(beauty[rated], crowd[test][rated]),
        "ensemble_r_test_label_only": pearson(beauty[~rated], crowd[test][~rated]) if (~rated).sum() > 2 else None,
        "per_rater_r_median": float(np.median(per_rater)),
        "per_rater_r_q25": float(np.quantile(per_rater, 0.25)),
        "per_rater_r_q75": float(np.quantile(per_rater, 0.75)),
        "per_rater_r_min": float(per_rater.min()), "per_rater_r_max": float(per_rater.max()),
    }


def run_pseudo_label(params, beauty, align, root: Path) -> dict:
    """Every aligned face of `params.set` (all splits) rated by the K predictors.

    beta is clipped to the rating scale (the count clipped is reported); the
    summary also checks the labels against CelebA's own `Attractive` attribute."""
    from facegan.data.datasets import load_images, set_folder

    ensemble = RaterEnsemble.load(model_folder(root))
    images, frame = load_images(set_folder(root, params.set))
    raw = ensemble.predict(cached_descriptors(beauty.descriptor, root, params.set, images, frame["path"], align))
    beta = np.clip(raw, *ensemble.scale).astype(np.float32)
    path = pseudo_label_path(root, params.set)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, beta=beta, raters=np.array(ensemble.raters), path=frame["path"].to_numpy(str),
             split=frame["split"].to_numpy(str), rating_scale=np.array(ensemble.scale))
    mean_beauty = beta.mean(1)
    off_diagonal = ~np.eye(beta.shape[1], dtype=bool)
    report = {
        "images": len(frame), "raters": beta.shape[1],
        "beauty_mean": float(mean_beauty.mean()), "beauty_std": float(mean_beauty.std()),
        **{f"beauty_q{int(q * 100):02d}": float(np.quantile(mean_beauty, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
        "per_rater_std_median": float(np.median(beta.std(0))),
        "inter_rater_r_mean": float(np.corrcoef(beta.T)[off_diagonal].mean()),
        "clipped_fraction": float((raw != np.clip(raw, *ensemble.scale)).mean()),
    }
    if "Attractive" in frame:
        attractive = frame["Attractive"].to_numpy().astype(bool)
        report["beauty_attractive_minus_not"] = float(mean_beauty[attractive].mean() - mean_beauty[~attractive].mean())
        report["attractive_auc"] = auc(mean_beauty, attractive)
    histogram(mean_beauty, ensemble.scale, root / "reports" / "beauty" / f"pseudo_beauty_{params.set}.png")
    save_real_ratings(beauty, ensemble.raters, root)
    return report


def save_real_ratings(beauty, raters: list[str], root: Path) -> None:
    """The rating set's own faces with the K raters' REAL ratings, beside the pseudo-labels,
    so a method can mix true and predicted beta (Beholder-GAN's `london_real`)."""
    _, frame, ratings, _ = load_rated_faces(beauty, root, SetQuality(beauty.set))
    beta = ratings[raters].to_numpy(np.float32)
    rated = ~np.isnan(beta).any(axis=1)    # SCUT: faces with official labels only, or fewer raters, have none
    np.savez(pseudo_label_path(root, "real"), beta=beta[rated], set=np.array(beauty.set), raters=np.array(raters),
             path=frame["path"].to_numpy(str)[rated], split=frame["split"].to_numpy(str)[rated])


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def histogram(values: np.ndarray, scale: tuple[float, float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(values, bins=40, color="#4477aa")
    ax.set_xlabel(f"ensemble beauty (mean of K raters' predicted scores, scale {scale[0]:g}-{scale[1]:g})")
    ax.set_ylabel("faces")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
