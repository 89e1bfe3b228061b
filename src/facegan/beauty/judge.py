"""The beauty judge: the trained per-rater ensemble scoring generated or edited faces (evaluate@beholder,
`facegan beautify`), apart from the stages that train it so that training Beholder-GAN never imports it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facegan.beauty.predictors import RaterEnsemble
from facegan.beauty.stage import Describer, dlib_of, model_folder


class BeautyJudge:
    """The trained ensemble with the descriptor it was trained on, for scoring
    generated or edited faces; also FaceNet and dlib descriptors for the same images."""

    def __init__(self, root: Path, device: str | torch.device = "cpu"):
        import json

        from facegan.pretrained.facenet import checkpoint_path, load_facenet

        folder = model_folder(root)
        self.ensemble = RaterEnsemble.load(folder)
        meta = json.loads((folder / "model.json").read_text())
        device = str(device)
        self.describe = Describer(meta["descriptor"], root, device, meta["precision"], meta["batch_size"],
                                  meta["eye_distance"], meta["eye_y"])
        self.eye_distance, self.eye_y = meta["eye_distance"], meta["eye_y"]
        self.facenet = load_facenet(str(checkpoint_path(Path(root))), device)

    def beauty(self, images: torch.Tensor) -> np.ndarray:
        """(N,) the ensemble's beauty (mean of the K raters' predictions) of [-1, 1] faces."""
        return self.ensemble.beauty(self.describe(images))

    def dlib(self, images: torch.Tensor) -> np.ndarray:
        return dlib_of(images, self.eye_distance, self.eye_y)
