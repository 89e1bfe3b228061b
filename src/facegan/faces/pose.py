"""Landmarks where the detector's 68-point model fails: profiles.

dlib's shape predictor is trained on near-frontal faces; on Multi-PIE's crops it
finds the face at every yaw (with the CNN detector) but places the eyes and
mouth wrongly beyond about 45 degrees. The rule used instead there, per
landmark, is the image of a point rotating rigidly about the vertical axis
under an orthographic camera:

    x(yaw) = a + b sin(yaw) + c cos(yaw),   y(yaw) = a' + b' sin(yaw) + c' cos(yaw)

(x = x0 + X cos(yaw) + Z sin(yaw) for a point (X, Z) about the axis at x0; the
same form for y absorbs the small vertical shifts of the crops). It is fitted
by least squares on the mean detector positions per camera over the TRAINING
people at the yaws where the detector is trusted, then evaluated at any yaw.

TP-GAN's local pathways crop four patches around the eye centres, the nose tip
and the mouth centre (`patch_centres`); `patch_box` keeps a patch inside the
image.
"""
from __future__ import annotations

import numpy as np

from facegan.config import LANDMARK_GROUPS

LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)   # image left and right (iBUG: the subject's right eye first)
NOSE_TIP, MOUTH = 30, slice(48, 68)
IBUG_GROUPS = dict(zip(LANDMARK_GROUPS, (slice(0, 17), slice(17, 27), slice(27, 36), slice(36, 48), MOUTH)))
PATCHES = ("left_eye", "right_eye", "nose", "mouth")


def _design(yaws_deg) -> np.ndarray:
    radians = np.deg2rad(np.asarray(yaws_deg, dtype=np.float64))
    return np.stack([np.ones_like(radians), np.sin(radians), np.cos(radians)], axis=1)


def fit_yaw_model(yaws_deg, points: np.ndarray) -> np.ndarray:
    """(K,) yaws and (K, L, 2) mean landmark positions at them -> (3, L, 2) coefficients.
    Needs at least three distinct yaws."""
    yaws_deg = np.asarray(yaws_deg, dtype=np.float64)
    if len(np.unique(yaws_deg)) < 3:
        raise ValueError(f"the yaw model needs landmarks at 3 or more distinct yaws, got {sorted(set(yaws_deg))}")
    points = np.asarray(points, dtype=np.float64)
    coefficients, *_ = np.linalg.lstsq(_design(yaws_deg), points.reshape(len(yaws_deg), -1), rcond=None)
    return coefficients.reshape(3, *points.shape[1:])


def predict_landmarks(coefficients: np.ndarray, yaw_deg: float) -> np.ndarray:
    """(L, 2) landmark positions at one yaw."""
    return np.tensordot(_design([yaw_deg])[0], coefficients, axes=1).astype(np.float32)


def patch_centres(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """The four local pathways' centres (x, y) from 68 landmarks."""
    points = np.asarray(landmarks, dtype=np.float32)
    return {"left_eye": points[LEFT_EYE].mean(0), "right_eye": points[RIGHT_EYE].mean(0),
            "nose": points[NOSE_TIP], "mouth": points[MOUTH].mean(0)}


def patch_box(centre, size, image_side: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a patch of `size` (a side, or (height, width)) centred at `centre`,
    shifted to lie inside the image."""
    height, width = (size, size) if np.isscalar(size) else size
    if max(height, width) > image_side:
        raise ValueError(f"a {height} x {width} patch does not fit a {image_side}-pixel image")
    x0, y0 = int(round(centre[0] - width / 2)), int(round(centre[1] - height / 2))
    x0, y0 = min(max(x0, 0), image_side - width), min(max(y0, 0), image_side - height)
    return x0, y0, x0 + width, y0 + height
