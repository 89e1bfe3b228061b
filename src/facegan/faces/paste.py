"""A method's output crop back in the user's photo (`facegan` commands' default; `--crop` keeps the crop).

The crop was cut from the photo by a similarity M (photo -> crop); the output is warped back with M's
inverse at the photo's full resolution, only over the crop's footprint, and blended through a feathered
mask of the face's outline (from the landmarks, in crop pixels), so the background, hair beyond the
outline and everything outside the crop stay the photo's own. A generator's output is often a little off
in brightness or tint; the seam would show it, so the output is shifted by the median colour difference
in a thin band just inside the seam, at most MAX_TINT (an offset, not a full colour transfer: an edit that
recolours the face keeps that change beyond MAX_TINT)."""
from __future__ import annotations

import cv2
import numpy as np

from facegan.faces.align import transform_points

JAW, BROWS, NOSE_TIP = slice(0, 17), slice(17, 27), 30
FEATHER = 0.06          # the mask's Gaussian sigma, as a fraction of the face's size (sqrt of its area)
MAX_TINT = 24.0         # the seam's colour offset at most (of 255): a generator's tint, not an edit's recolouring


def landmark_outline(points: np.ndarray) -> np.ndarray:
    """The face's outline from its 68 landmarks: the jaw and the brows lifted to the hairline (by
    0.8 x the brows' height above the nose tip, along the face's own up direction)."""
    points = np.asarray(points, np.float64)
    brows = points[BROWS]
    up = brows.mean(0) - points[NOSE_TIP]
    return np.concatenate([points[JAW], brows + 0.8 * up])


def ellipse_outline(centre, half_width: float, top: float, bottom: float, n: int = 32) -> np.ndarray:
    """An upright ellipse from `top` to `bottom` (y) and centre[0] +- half_width (x): a face's outline
    where no 68 landmarks describe the output (a frontalised face, a photo used as framed)."""
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    middle, half_height = (top + bottom) / 2, (bottom - top) / 2
    return np.stack([centre[0] + half_width * np.cos(angle), middle + half_height * np.sin(angle)], 1)


def crop_footprint(shape, side: int, matrix: np.ndarray, outline: np.ndarray, feather: float = FEATHER):
    """Where a side x side crop (cut by the 2x3 photo -> crop similarity `matrix`) lies in a photo of
    `shape`: its bounding box (x0, y0, x1, y1) or None when outside, the ROI pixel -> crop pixel matrix,
    and the feathered mask (h x w x 1) of the `outline` (K x 2 crop pixels) within the crop's footprint."""
    height, width = shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = transform_points(np.array([[0, 0], [side, 0], [0, side], [side, side]], np.float64), inverse)
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int), [width, height])
    if x1 - x0 < 2 or y1 - y0 < 2:          # the crop's footprint lies outside the photo
        return None, None, None
    to_crop = np.asarray(matrix, np.float64).copy()   # ROI pixel -> crop pixel
    to_crop[:, 2] += to_crop[:, :2] @ np.array([x0, y0], np.float64)
    size = (int(x1 - x0), int(y1 - y0))
    inside = cv2.warpAffine(np.ones((side, side), np.float32), to_crop, size,
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    hull = cv2.convexHull((transform_points(np.asarray(outline, np.float64), inverse) - [x0, y0])
                          .astype(np.float32)).astype(np.float64)
    sigma = max(1.0, feather * np.sqrt(max(cv2.contourArea(hull.astype(np.float32)), 1.0)))
    mask = np.zeros(size[::-1], np.float32)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0)
    mask = np.minimum(mask, inside)
    radius = int(round(1.5 * sigma))        # shrink first, so the feathered edge ends near the outline
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    return (x0, y0, x1, y1), to_crop, cv2.GaussianBlur(mask, (0, 0), sigma)[..., None]


def warped_back(crop: np.ndarray, to_crop: np.ndarray, box) -> np.ndarray:
    """A crop-frame image (S x S x C) at the photo's resolution over `box` (bicubic), float32."""
    x0, y0, x1, y1 = box
    return cv2.warpAffine(crop, to_crop, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def paste_back(photo: np.ndarray, output: np.ndarray, matrix: np.ndarray, outline: np.ndarray,
               feather: float = FEATHER) -> np.ndarray:
    """`photo` (H x W x 3 uint8) with `output` (S x S x 3 uint8, in the frame the 2x3 photo -> crop
    similarity `matrix` defines) blended in through the feathered `outline` (K x 2 crop pixels)."""
    box, to_crop, mask = crop_footprint(photo.shape, output.shape[0], matrix, outline, feather)
    if box is None:
        return photo.copy()
    x0, y0, x1, y1 = box
    warped = warped_back(output, to_crop, box)
    region = photo[y0:y1, x0:x1].astype(np.float32)
    seam = (mask[..., 0] > 0.5) & (mask[..., 0] < 0.9)
    if seam.sum() >= 16:
        warped += np.clip(np.median(region[seam] - warped[seam], axis=0), -MAX_TINT, MAX_TINT)
    out = photo.copy()
    out[y0:y1, x0:x1] = np.clip(region * (1 - mask) + warped * mask, 0, 255).round().astype(np.uint8)
    return out


def add_change(photo: np.ndarray, change: np.ndarray, matrix: np.ndarray, outline: np.ndarray,
               feather: float = FEATHER) -> np.ndarray:
    """`photo` plus a method's change (S x S x 3 float, levels of 255: output - reconstruction in the
    crop's frame) warped back and faded out through the outline's mask: the residual edit at the photo's
    full resolution, its own detail kept (no tint matching: the change has no tint of its own)."""
    box, to_crop, mask = crop_footprint(photo.shape, change.shape[0], matrix, outline, feather)
    if box is None:
        return photo.copy()
    x0, y0, x1, y1 = box
    out = photo.copy()
    region = photo[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(region + mask * warped_back(change.astype(np.float32), to_crop, box), 0, 255
                                ).round().astype(np.uint8)
    return out


def paste_faces(photo: np.ndarray, outputs, framed, changes: bool = False) -> np.ndarray:
    """`photo` with each face's output crop pasted back through its Framed (matrix, outline); with
    `changes`, each output is a change to add (add_change) instead."""
    put = add_change if changes else paste_back
    for output, face in zip(outputs, framed):
        photo = put(photo, output, face.matrix, face.outline)
    return photo


def side_by_side(left: np.ndarray, right: np.ndarray, height: int = 512, gap: int = 8) -> np.ndarray:
    """Two photos of one size at `height` pixels (scaled up or down), a white gap between."""
    scale = height / left.shape[0]
    size = (max(1, round(left.shape[1] * scale)), height)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    panels = [cv2.resize(image, size, interpolation=interpolation) for image in (left, right)]
    return np.concatenate([panels[0], np.full((height, gap, 3), 255, np.uint8), panels[1]], 1)
