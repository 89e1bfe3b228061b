"""The attribute judge: a CNN trained on real aligned CelebA crops, used to score
whether generated or edited faces show the attributes they were asked for.

Architecture: four stride-2 conv blocks (conv 3x3 - BN - ReLU, twice) from
`width` to 8 x `width` channels, global average pooling, one logit per attribute; trained
with binary cross-entropy and horizontal flips. The checkpoint with the best
mean balanced accuracy on the validation split is kept.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegan.devices import bf16_autocast

log = logging.getLogger(__name__)


class AttributeClassifier(nn.Module):
    def __init__(self, attributes: list[str], width: int = 32):
        super().__init__()
        self.attributes = list(attributes)
        layers, cin = [], 3
        for k in range(4):
            cout = width * 2 ** k
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, len(attributes))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, A) logits."""
        return self.head(self.features(x).mean((2, 3)))

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, batch: int = 256) -> np.ndarray:
        """Probabilities (N, A) for images on any device (moved to the model's)."""
        self.eval()
        device = next(self.parameters()).device
        return np.concatenate([torch.sigmoid(self(x[i:i + batch].to(device)).float()).cpu().numpy()
                               for i in range(0, len(x), batch)])

    def column(self, name: str) -> int:
        if name not in self.attributes:
            raise KeyError(f"the attribute classifier does not judge {name!r}; it knows {', '.join(self.attributes)} "
                           f"(add it to attr_classifier.attributes)")
        return self.attributes.index(name)


def per_attribute_scores(probabilities: np.ndarray, labels: np.ndarray, attributes: list[str]) -> dict:
    """Accuracy and balanced accuracy (mean of the true-positive and true-negative rates) over the images
    whose label is defined (NaN: undefined, e.g. the hair colour of an avatar in a hat)."""
    scores = {}
    for k, name in enumerate(attributes):
        defined = ~np.isnan(labels[:, k].astype(np.float64))
        truth, predicted = labels[defined, k].astype(bool), probabilities[defined, k] >= 0.5
        tpr = predicted[truth].mean() if truth.any() else np.nan
        tnr = (~predicted[~truth]).mean() if (~truth).any() else np.nan
        scores[name] = {"accuracy": float((predicted == truth).mean()) if defined.any() else float("nan"),
                        "balanced_accuracy": float(np.nanmean([tpr, tnr])) if defined.any() else float("nan"),
                        "positive_rate": float(truth.mean()) if defined.any() else float("nan"),
                        "images": int(defined.sum())}
    return scores


def train_step(model: AttributeClassifier, optimizer, x: torch.Tensor, y: torch.Tensor, autocast: bool,
               pos_weight: torch.Tensor | None = None) -> float:
    model.train()
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    flip = torch.rand(len(x), device=device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    defined = ~torch.isnan(y)     # an undefined label (NaN) carries no loss
    with bf16_autocast(device, autocast):
        losses = F.binary_cross_entropy_with_logits(model(x).float(), y.nan_to_num(0.0), pos_weight=pos_weight,
                                                    reduction="none")
    loss = (losses * defined).sum() / defined.sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def fit(model: AttributeClassifier, train: tuple, val: tuple, epochs: int, batch_size: int, lr: float,
        seed: int, autocast: bool, on_epoch=None) -> dict:
    """Adam with cosine decay; positives weighted by the negative/positive ratio
    (capped at 10) so rare attributes (Mustache, Pale_Skin) are not ignored; the
    best-on-validation weights are restored at the end."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = train
    steps_per_epoch = max(1, len(x) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    positive = torch.nanmean(y, 0).nan_to_num(0.5).clamp(1e-3, 1 - 1e-3)
    pos_weight = ((1 - positive) / positive).clamp(max=10).to(next(model.parameters()).device)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        losses = []
        for idx in order.split(batch_size):
            if len(idx) > 1:
                losses.append(train_step(model, optimizer, x[idx], y[idx], autocast, pos_weight))
                schedule.step()
        with bf16_autocast(next(model.parameters()).device, autocast):
            scores = per_attribute_scores(model.predict(val[0]), val[1].numpy(), model.attributes)
        mean_balanced = float(np.mean([s["balanced_accuracy"] for s in scores.values()]))
        log.info("epoch %d: loss %.4f, val mean balanced accuracy %.4f", epoch, np.mean(losses), mean_balanced)
        if on_epoch:
            on_epoch(epoch, float(np.mean(losses)), mean_balanced)
        if mean_balanced > best:
            best, best_state = mean_balanced, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"val_mean_balanced_accuracy": best}


def save(model: AttributeClassifier, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "model.json").write_text(json.dumps({"attributes": model.attributes, "width": model.width}, indent=2))


def load(folder: Path) -> AttributeClassifier:
    folder = Path(folder)
    if not (folder / "model.pt").exists():
        raise FileNotFoundError(f"{folder / 'model.pt'} not found: run `dvc repro attr_classifier`")
    meta = json.loads((folder / "model.json").read_text())
    model = AttributeClassifier(meta["attributes"], meta["width"])
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


def run_attr_classifier(params, root: Path, device: str = "cpu", on_epoch=None) -> dict:
    """Stage `attr_classifier`: train on the train split, select on val, score on test."""
    from facegan.data.datasets import load_images, set_folder, to_tensor

    images, frame = load_images(set_folder(root, "celeba"))
    x = to_tensor(images).contiguous(memory_format=torch.channels_last)
    y = torch.tensor(np.array(frame[params.attributes], dtype=np.float32))
    split = frame["split"].to_numpy()
    model = AttributeClassifier(params.attributes, params.width).to(device, memory_format=torch.channels_last)
    fitted = fit(model, (x[split == "train"], y[split == "train"]), (x[split == "val"], y[split == "val"]),
                 params.epochs, params.batch_size, params.lr, params.seed, params.bf16, on_epoch)
    test = split == "test"
    scores = per_attribute_scores(model.predict(x[test]), y[test].numpy(), params.attributes)
    save(model.cpu(), root / "models" / "attr_classifier")
    return {**fitted, "test_images": int(test.sum()),
            "test_mean_accuracy": float(np.mean([s["accuracy"] for s in scores.values()])),
            "test_mean_balanced_accuracy": float(np.mean([s["balanced_accuracy"] for s in scores.values()])),
            "test": scores}


def stage_body(section: str, run_fit):
    """The body of a stage that fits a reader (attr_classifier, avatar_reader): run_fit(params.<section>,
    root, device, on_epoch) with each epoch's loss and validation score logged to the stage's MLflow run,
    its returned figures written to reports/metrics/<section>.json."""
    from facegan.devices import resolve_device
    from facegan.paths import project_root
    from facegan.reports import write_metrics

    def body(params, run):
        root = project_root()

        def log_epoch(epoch, loss, val):
            run.log_metrics({"train_loss": loss, "val_mean_balanced_accuracy": val}, step=epoch)
        return write_metrics(root, section, run_fit(getattr(params, section), root, resolve_device("auto"), log_epoch))
    return body
