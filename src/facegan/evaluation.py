"""What evaluate@<method> hands a method's `evaluate`: the project, settings and the shared measures.

Kept apart from methods/base.py so that training never imports the measures: editing them re-runs
the evaluate stages, not the training ones (tests/test_contract.py checks the stages' deps).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from facegan.config import AlignParams


@dataclass
class EvalContext:
    """What evaluate@<method> hands a method: the project, where its figures go, the shared `eval`
    section, its own `evaluate.<method>` section and the alignment template (for dlib's chips)."""
    root: Path
    report_dir: Path
    shared: object               # config.EvalParams
    own: object                  # config.evaluate.<method>
    align: "AlignParams"
    device: str = "cpu"

    def save_grid(self, images: torch.Tensor, row_labels: list[str], name: str, per_row: int) -> None:
        from facegan.reports import save_labelled_grid

        save_labelled_grid(images, row_labels, self.report_dir / name, per_row)

    def identity_check(self, paths, limit: int):
        """The shared identity-preservation protocol for outputs made from the test faces at `paths`."""
        from facegan.metrics.identity import IdentityCheck

        return IdentityCheck(self.root, paths, limit, self.shared.seed, self.align.eye_distance, self.align.eye_y)

    def attribute_judge(self):
        from facegan.metrics import attributes

        return attributes.load(self.root / "models" / "attr_classifier")

    def fid_kid(self, fakes: torch.Tensor, reference: dict | tuple[str, str]) -> dict:
        """FID/KID of (N, 3, H, W) images in [-1, 1] against a reference: (set, split) of the
        fid_stats cache at the images' size, or features computed here."""
        from facegan.metrics.fid import fid_kid_of, load_reference, reference_path

        if isinstance(reference, tuple):
            reference = load_reference(reference_path(self.root, *reference, fakes.shape[-1]))
        return fid_kid_of(fakes, reference, self.shared.kid_subsets, self.shared.fid_se_rounds)


