"""Face detection and 68-point landmarks (iBUG 300-W order), two backends.

- `dlib` (default, offline): HOG frontal detector, optionally dlib's MMOD CNN
  detector, and the 68-point shape predictor.
- `face_alignment`: the same dlib boxes, landmarks from the FAN network of the
  `face-alignment` package, whose weights must already lie in
  $TORCH_HOME/hub/checkpoints (the package would download them; this machine
  cannot).

Detection runs on a copy resized so its short side is `detect_side` pixels:
CelebA's half-resolution crops are upscaled past HOG's 80-pixel window and the
675-pixel London photos are shrunk to keep HOG fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facegan.pretrained import dlib_models

FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"


@dataclass
class Detection:
    box: np.ndarray            # x0, y0, x1, y1 in source pixels
    landmarks: np.ndarray      # 68 x 2 in source pixels
    detector: str              # which rule found it
    n_faces: int               # faces the detector saw (the largest is kept)


def fan_weights_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FAN_WEIGHTS


class Landmarker:
    """Detect the largest face and place its 68 landmarks."""

    def __init__(self, backend: str = "dlib", device: str = "cpu", detect_side: int = 200):
        import dlib

        self.dlib = dlib
        self.detect_side = detect_side
        self.hog = dlib.get_frontal_face_detector()
        self._cnn = None
        self.backend = backend
        if backend == "dlib":
            self.shape_predictor = dlib_models.load("landmarks68")
        elif backend == "face_alignment":
            self.fan = self._load_fan(device)
        else:
            raise ValueError(f"unknown landmark backend {backend!r}; choose dlib or face_alignment")

    @staticmethod
    def _load_fan(device: str):
        weights = fan_weights_path()
        if not weights.exists():
            raise RuntimeError(
                f"face_alignment backend: FAN weights not found at {weights}. This machine cannot download "
                f"them; copy {FAN_WEIGHTS} there (or set TORCH_HOME), or use the offline backend "
                f"`align.backend: dlib`.")
        import face_alignment

        return face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, face_detector="dlib", flip_input=False,
            compile=False, face_detector_kwargs={"path_to_detector": str(dlib_models.model_path("cnn_detector"))})

    @property
    def cnn(self):
        if self._cnn is None:
            self._cnn = dlib_models.load("cnn_detector")
        return self._cnn

    def _work_image(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        scale = self.detect_side / min(image.shape[:2])
        if abs(scale - 1) < 0.05:
            return np.ascontiguousarray(image), 1.0
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        return cv2.resize(image, size, interpolation=interp), scale

    def _rects(self, work: np.ndarray, detector: str) -> list:
        if detector == "hog":
            rects = list(self.hog(work, 0)) or list(self.hog(work, 1))
            return rects
        if detector == "cnn":
            return [d.rect for d in self.cnn(work, 0)]
        raise ValueError(f"unknown detector {detector!r}")

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 x 2 landmarks for a face known to lie in `box` (source pixels)."""
        work, scale = self._work_image(image)
        x0, y0, x1, y1 = (np.asarray(box, float) * scale).round().astype(int)
        return self._predict(work, self.dlib.rectangle(int(x0), int(y0), int(x1), int(y1))) / scale

    def _predict(self, work: np.ndarray, rect) -> np.ndarray:
        if self.backend == "dlib":
            shape = self.shape_predictor(work, rect)
            return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        # float64: face_alignment assigns the box's scale into a torch tensor, which refuses np.float32
        box = np.array([[rect.left(), rect.top(), rect.right(), rect.bottom()]], dtype=np.float64)
        points = self.fan.get_landmarks_from_image(work, detected_faces=box)
        return np.asarray(points[0][:, :2], dtype=np.float32)

    def detect(self, image: np.ndarray, detectors: list[str]) -> Detection | None:
        """Try the detectors in order; the largest face of the first that finds one."""
        found = self.detect_all(image, detectors, largest_only=True)
        return found[0] if found else None

    def detect_all(self, image: np.ndarray, detectors: list[str], largest_only: bool = False) -> list[Detection]:
        """Every face the first detector that finds any sees, largest first (landmarks for the largest
        alone with `largest_only`)."""
        work, scale = self._work_image(image)
        for detector in detectors:
            rects = self._rects(work, detector)
            if not rects:
                continue
            order = sorted(range(len(rects)), key=lambda i: -rects[i].width() * rects[i].height())
            faces = []
            for i in order[:1] if largest_only else order:
                rect = rects[i]
                box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32) / scale
                faces.append(Detection(box=box, landmarks=self._predict(work, rect) / scale, detector=detector,
                                       n_faces=len(rects)))
            return faces
        return []


# ---------------------------------------------------------------- many images, in a process pool
_pool_landmarker: Landmarker | None = None


_pools: dict = {}   # (workers, detect_side) -> a process pool kept for the process's life (see detect_many)


def _init_pool_landmarker(detect_side: int) -> None:
    global _pool_landmarker
    if _pool_landmarker is None or _pool_landmarker.detect_side != detect_side:
        _pool_landmarker = Landmarker(detect_side=detect_side)


def _pool(workers: int, detect_side: int):
    """The pool for these settings, started on first use and reused: an evaluation calls detect_many several
    times (TP-GAN's nine), and each new `spawn` pool costs ~2 s of start-up (imports, dlib's models)."""
    import atexit
    import multiprocessing

    key = (workers, detect_side)
    if key not in _pools:
        _pools[key] = multiprocessing.get_context("spawn").Pool(workers, _init_pool_landmarker, (detect_side,))
        atexit.register(_pools[key].terminate)
    return _pools[key]


def _detect_job(job) -> tuple[np.ndarray | None, str]:
    source, detectors = job
    if not isinstance(source, np.ndarray):
        from PIL import Image

        source = np.asarray(Image.open(source).convert("RGB"))
    found = _pool_landmarker.detect(source, list(detectors))
    return (None, "") if found is None else (found.landmarks, found.detector)


def detect_many(sources: list, detectors, detect_side: int, workers: int) -> tuple[np.ndarray, list[str]]:
    """(N, 68, 2) dlib landmarks of image files or (H, W, 3) uint8 arrays, NaN where no detector
    found a face, and the detector that found each ('' for none). The pool is started with
    `spawn` (a forked child of a process whose dlib CNN detector was already in use can hang) and kept."""
    jobs = [(s if isinstance(s, np.ndarray) else str(s), tuple(detectors)) for s in sources]
    if workers <= 1 or len(jobs) < 2:
        _init_pool_landmarker(detect_side)
        results = [_detect_job(job) for job in jobs]
    else:
        results = _pool(workers, detect_side).map(_detect_job, jobs,
                                                   chunksize=max(1, min(16, len(jobs) // (4 * workers))))
    landmarks = np.full((len(jobs), 68, 2), np.nan, dtype=np.float32)
    for i, (points, _) in enumerate(results):
        if points is not None:
            landmarks[i] = points
    return landmarks, [name for _, name in results]
