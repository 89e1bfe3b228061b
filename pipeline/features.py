"""Stage features: FaceNet's pool and embedding of every stored image and its mirror -> data/features/."""
from facegan.devices import resolve_device
from facegan.paths import project_root
from facegan.pretrained.feature_stage import run_features
from facegan.reports import write_metrics
from facegan.stage import run_stage


def body(params, run):
    root = project_root()
    return write_metrics(root, "features", run_features(params.features, root, resolve_device(params.features.device)))


if __name__ == "__main__":
    run_stage("features", ["features"], body)
