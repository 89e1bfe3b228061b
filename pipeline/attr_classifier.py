"""Stage attr_classifier: the CelebA attribute judge -> models/attr_classifier/."""
from facegan.metrics.attributes import run_attr_classifier, stage_body
from facegan.stage import run_stage

if __name__ == "__main__":
    run_stage("attr_classifier", ["attr_classifier"], stage_body("attr_classifier", run_attr_classifier))
