"""Similarity alignment of faces to one canonical 68-point template.

The template (template_68.json) is the generalized-Procrustes mean of dlib
landmarks on CelebA training faces, in units of the inter-ocular distance with
the midpoint of the eye centres at the origin (`build_template` made it; see
`python -m facegan.faces.align --help`). The similarity (rotation, uniform
scale, translation; no reflection) is fitted by least squares (Umeyama 1991)
on the points that do not move with expression: nose bridge and tip, both eyes
and the mouth corners. The crop places the eye centres `eye_distance * size`
apart at height `eye_y * size`.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np

TEMPLATE_FILE = Path(__file__).with_name("template_68.json")
RIGHT_EYE = list(range(36, 42))   # the subject's right eye: image left
LEFT_EYE = list(range(42, 48))
NOSE = [27, 28, 29, 30, 33]
MOUTH_CORNERS = [48, 54]
STABLE = NOSE + RIGHT_EYE + LEFT_EYE + MOUTH_CORNERS


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points[RIGHT_EYE].mean(0), points[LEFT_EYE].mean(0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity M minimising sum |M [src;1] - dst|^2 (Umeyama 1991, no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rotation = u @ fix @ vt
    scale = np.trace(np.diag(sigma) @ fix) / xs.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - matrix[:, :2] @ mu_s
    return matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return (np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def normalise_shape(points: np.ndarray) -> np.ndarray:
    """Eye centres to (-0.5, 0) and (0.5, 0)."""
    right, left = eye_centres(points)
    matrix = umeyama(np.stack([right, left]), np.array([[-0.5, 0.0], [0.5, 0.0]]))
    return transform_points(points, matrix)


def build_template(shapes: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Generalized Procrustes mean of N x 68 x 2 landmark sets, eye-normalised."""
    shapes = np.asarray(shapes, np.float64)
    mean = normalise_shape(shapes[0])
    for _ in range(iterations):
        fitted = [transform_points(s, umeyama(s[STABLE], mean[STABLE])) for s in shapes]
        mean = normalise_shape(np.mean(fitted, axis=0))
    return mean


@functools.lru_cache(maxsize=1)
def load_template() -> np.ndarray:
    return np.asarray(json.loads(TEMPLATE_FILE.read_text())["points"], dtype=np.float64)


def template_pixels(size: int, eye_distance: float, eye_y: float) -> np.ndarray:
    return load_template() * (eye_distance * size) + np.array([size / 2.0, eye_y * size])


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp into a size x size crop; shrink first with area averaging when the
    similarity scales down by more than 2x (warpAffine alone would alias)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        factor = 2 * scale
        small = cv2.resize(image, (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor))),
                           interpolation=cv2.INTER_AREA)
        actual = np.array([small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]])
        matrix = matrix.copy()
        matrix[:, :2] = matrix[:, :2] / actual[None, :]
        image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int, eye_distance: float,
               eye_y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crop, landmarks in crop coordinates, 2x3 source->crop matrix)."""
    target = template_pixels(size, eye_distance, eye_y)
    matrix = umeyama(landmarks[STABLE], target[STABLE])
    return warp(image, matrix, size), transform_points(landmarks, matrix), matrix


def square_matrix(shape: tuple[int, ...], size: int) -> np.ndarray:
    """The 2x3 similarity that centres an image of `shape` on a square and scales it to size x size."""
    h, w = shape[:2]
    side = max(h, w)
    scale = size / side
    return np.array([[scale, 0, (side - w) / 2 * scale], [0, scale, (side - h) / 2 * scale]])


def dataset_crop(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The release's own crop, centred on a square (edge-replicated) and resized."""
    matrix = square_matrix(image.shape, size)
    return warp(image, matrix, size), matrix


def main() -> None:
    """Rebuild template_68.json from an aligned-stage landmark file of source landmarks."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("landmarks", type=Path, help="landmarks.npz written by the align stage (key 'source')")
    parser.add_argument("--n", type=int, default=2000, help="faces to use")
    args = parser.parse_args()
    shapes = np.load(args.landmarks)["source"]
    shapes = shapes[~np.isnan(shapes).any(axis=(1, 2))][: args.n]
    template = build_template(shapes)
    points = ",\n".join(json.dumps([round(float(x), 4), round(float(y), 4)]) for x, y in template)
    about = (f"GPA mean of dlib 68-point landmarks on {len(shapes)} faces from {args.landmarks}; "
             "units of inter-ocular distance, eye midpoint at the origin")
    TEMPLATE_FILE.write_text(f'{{"about": {json.dumps(about)},\n"points": [\n{points}\n]}}\n')
    print(f"wrote {TEMPLATE_FILE} from {len(shapes)} faces")


if __name__ == "__main__":
    main()
