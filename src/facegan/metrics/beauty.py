"""Beauty control (Beholder-GAN's claim): does the beauty the per-rater ensemble predicts follow the beta asked
for, and does a strip of rising beta stay one person?"""
from __future__ import annotations

import numpy as np

from facegan.metrics.identity import DLIB_THRESHOLD


def beauty_control(asked: np.ndarray, predicted: np.ndarray) -> dict:
    """asked (L,) or (S, L): mean beta of each level (per strip where strips ask different levels);
    predicted (S, L): the ensemble's beauty of strip s at level l.

    beauty_spearman pools every (z, level) pair: the literal, strictest reading
    (different z differ in beauty too); within_z asks whether the SAME face
    ranks right (the paper's claim), levels whether the average does."""
    from scipy.stats import spearmanr

    strips, levels = predicted.shape
    asked = np.broadcast_to(asked, predicted.shape)
    within = [spearmanr(a, row).statistic for a, row in zip(asked, predicted)]
    return {
        "beauty_spearman": float(spearmanr(asked.ravel(), predicted.ravel()).statistic),
        "beauty_spearman_within_z": float(np.nanmean(within)),
        "beauty_spearman_levels": float(spearmanr(asked.mean(0), predicted.mean(0)).statistic),
        "beauty_predicted_low": float(predicted[:, 0].mean()),
        "beauty_predicted_high": float(predicted[:, -1].mean()),
        "beauty_asked_low": float(asked[:, 0].mean()), "beauty_asked_high": float(asked[:, -1].mean()),
    }


def strip_identity(descriptors: np.ndarray) -> dict:
    """descriptors (S, L, D): is a strip one person? dlib's 0.6 same-person rule on
    neighbours and on the two ends, beside the same rule on different z at one level."""
    neighbours = np.linalg.norm(descriptors[:, 1:] - descriptors[:, :-1], axis=2)
    ends = np.linalg.norm(descriptors[:, -1] - descriptors[:, 0], axis=1)
    strangers = np.linalg.norm(descriptors - np.roll(descriptors, 1, axis=0), axis=2)
    return {
        "strip_neighbours_same_rate": float((neighbours < DLIB_THRESHOLD).mean()),
        "strip_ends_same_rate": float((ends < DLIB_THRESHOLD).mean()),
        "strip_different_z_same_rate": float((strangers < DLIB_THRESHOLD).mean()),
        "strip_neighbour_distance": float(neighbours.mean()),
        "strip_different_z_distance": float(strangers.mean()),
    }
