"""Stage attr_classifier: the CelebA attribute judge -> models/attr_classifier/."""
from facegan.devices import resolve_device
from facegan.metrics.attributes import run_attr_classifier
from facegan.paths import project_root
from facegan.reports import write_metrics
from facegan.stage import run_stage


def body(params, run):
    root = project_root()
    log_epoch = lambda epoch, loss, val: run.log_metrics({"train_loss": loss, "val_mean_balanced_accuracy": val},
                                                         step=epoch)
    return write_metrics(root, "attr_classifier",
                         run_attr_classifier(params.attr_classifier, root, resolve_device("auto"), log_epoch))


if __name__ == "__main__":
    run_stage("attr_classifier", ["attr_classifier"], body)
