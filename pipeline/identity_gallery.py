"""Stage identity_gallery: descriptors of real test faces and verification accuracy (dlib, FaceNet)."""
from facegan.metrics.identity import run_identity_gallery
from facegan.paths import project_root
from facegan.reports import write_metrics
from facegan.stage import run_stage

if __name__ == "__main__":
    root = project_root()
    run_stage("identity_gallery", ["identity"], lambda params, run: write_metrics(
        root, "face_verification", run_identity_gallery(params.identity, params.align, root)))
