"""Identity: dlib descriptors and FaceNet embeddings, face verification accuracy.

Verification follows the LFW protocol: balanced genuine / impostor pairs split
into 10 folds; for each fold the distance threshold that maximises accuracy on
the other nine is applied to it; the mean accuracy over folds is reported, and
for dlib also the accuracy at its fixed same-person threshold 0.6.

Every image here is an aligned crop (real or generated in the aligned frame),
so the dlib chip (150 x 150, `dlib_resnet.face_chip`) is cut with the alignment
template's landmarks at the image's size: real photos and method outputs go
through exactly the same geometry.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from facegan.faces.align import template_pixels
from facegan.metrics import binomial_se

DLIB_THRESHOLD = 0.6
FOLDS = 10


@functools.lru_cache(maxsize=4)
def _template_shape(size: int, eye_distance: float, eye_y: float):
    return fixed_shape(template_pixels(size, eye_distance, eye_y), size)


def dlib_descriptors(images: np.ndarray, eye_distance: float, eye_y: float) -> np.ndarray:
    """(N, H, W, 3) uint8 aligned crops -> (N, 128) dlib ResNet descriptors."""
    return descriptors_at(images, _template_shape(images.shape[1], eye_distance, eye_y))


def descriptors_at(images: np.ndarray, shape) -> np.ndarray:
    """dlib descriptors of crops that share one framing: the chip is cut at the fixed landmarks `shape`
    (a dlib.full_object_detection), no detector (which fails on blurred generator outputs)."""
    from facegan.pretrained.dlib_resnet import describe_chips, face_chip

    return describe_chips([face_chip(im, shape) for im in images])


def fixed_shape(points: np.ndarray, size: int):
    """A dlib.full_object_detection of the (68, 2) landmarks `points` in a size x size crop."""
    import dlib

    return dlib.full_object_detection(dlib.rectangle(0, 0, size - 1, size - 1),
                                      [dlib.point(int(round(x)), int(round(y))) for x, y in points])


def detected_dlib_descriptors(images: np.ndarray, detectors, detect_side: int = 200,
                              workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """dlib's own pipeline on unaligned photos: find the face (`detectors` in order), place the
    68 landmarks, cut the chip from them, describe it. Returns (N, 128) descriptors, NaN where
    no face was found, and the found mask: a recognizer that finds no face cannot identify it."""
    import dlib

    from facegan.faces.landmarks import detect_many
    from facegan.pretrained.dlib_resnet import describe_chips, face_chip

    landmarks, _ = detect_many(list(images), detectors, detect_side, workers)
    found = ~np.isnan(landmarks).any(axis=(1, 2))
    chips = []
    for image, points in zip(images[found], landmarks[found]):
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in points])
        chips.append(face_chip(image, shape))
    descriptors = np.full((len(images), 128), np.nan)
    if chips:
        descriptors[found] = describe_chips(chips)
    return descriptors, found


@torch.inference_mode()
def facenet_embeddings(images: torch.Tensor, facenet, batch: int = 64) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, 512) unit-norm FaceNet embeddings."""
    return np.concatenate([facenet(images[i:i + batch]).float().numpy() for i in range(0, len(images), batch)])


def verification_pairs(identities, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to n_pairs genuine pairs (same identity, different photos) and as many impostors: (i, j, same)."""
    rng = np.random.default_rng(seed)
    identities = np.asarray(identities).astype(str)
    by_identity: dict[str, np.ndarray] = {}
    for index, name in enumerate(identities):
        by_identity.setdefault(name, []).append(index)
    genuine = [(a, b) for members in by_identity.values() for k, a in enumerate(members) for b in members[k + 1:]]
    if not genuine:
        raise ValueError("no identity has two photos: genuine pairs are impossible")
    genuine = [genuine[k] for k in rng.permutation(len(genuine))[:n_pairs]]
    impostor = []
    while len(impostor) < len(genuine):
        a, b = rng.integers(len(identities), size=2)
        if identities[a] != identities[b]:
            impostor.append((a, b))
    pairs = np.array(genuine + impostor)
    same = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    return pairs[:, 0], pairs[:, 1], same


def accuracy_at(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((distances < threshold) == same).mean())


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold (midpoint between sorted distances) with the highest accuracy."""
    order = np.sort(np.unique(distances))
    candidates = np.r_[order[0] - 1e-6, (order[1:] + order[:-1]) / 2, order[-1] + 1e-6]
    accuracies = [accuracy_at(distances, same, t) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def cross_validated_accuracy(distances: np.ndarray, same: np.ndarray, folds: int = FOLDS, seed: int = 0) -> dict:
    """LFW protocol: threshold from 9 folds, accuracy on the 10th; mean and std over folds
    (fewer folds when there are fewer than 20 pairs)."""
    folds = max(2, min(folds, len(distances) // 2))
    fold_of = np.random.default_rng(seed).permutation(len(distances)) % folds
    accuracies, thresholds = [], []
    for fold in range(folds):
        test = fold_of == fold
        threshold = best_threshold(distances[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(distances[test], same[test], threshold))
    return {"accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "threshold": float(np.mean(thresholds))}


def verification(descriptors: np.ndarray, identities, n_pairs: int, seed: int = 0,
                 fixed_threshold: float | None = None) -> dict:
    i, j, same = verification_pairs(identities, n_pairs, seed)
    distances = np.linalg.norm(descriptors[i] - descriptors[j], axis=1)
    result = {**cross_validated_accuracy(distances, same, seed=seed), "pairs": int(len(same))}
    if fixed_threshold is not None:
        result["accuracy_at_fixed"] = accuracy_at(distances, same, fixed_threshold)
    return result


def identity_preservation(outputs: np.ndarray, source_index: np.ndarray, gallery: np.ndarray,
                          gallery_identities, seed: int = 0, fixed_threshold: float | None = DLIB_THRESHOLD) -> dict:
    """Does a transformation keep who the person is?

    outputs[k] was made from gallery photo source_index[k]. Genuine pairs:
    (outputs[k], another photo of the same identity); impostor pairs: (outputs[k],
    a photo of someone else). The ceiling is the same protocol, on the same
    partners, with the untransformed source photo in place of the output.
    """
    rng = np.random.default_rng(seed)
    identities = np.asarray(gallery_identities).astype(str)
    rows = []
    for k, source in enumerate(source_index):
        others = np.flatnonzero((identities == identities[source]) & (np.arange(len(identities)) != source))
        strangers = np.flatnonzero(identities != identities[source])
        if len(others) == 0 or len(strangers) == 0:
            continue
        rows.append((k, source, int(rng.choice(others)), True))
        rows.append((k, source, int(rng.choice(strangers)), False))
    if not rows:
        raise ValueError("no output has another photo of its identity in the gallery: nothing to verify")
    k, source, partner, same = (np.array(c) for c in zip(*rows))
    transformed = np.linalg.norm(outputs[k] - gallery[partner], axis=1)
    untransformed = np.linalg.norm(gallery[source] - gallery[partner], axis=1)
    accuracy = cross_validated_accuracy(transformed, same, seed=seed)["accuracy"]
    result = {"identity_acc": accuracy,
              # binomial over pairs (a face's two pairs share its output, so a slight underestimate)
              "identity_acc_se": binomial_se(accuracy, len(same)),
              "identity_ceiling": cross_validated_accuracy(untransformed, same, seed=seed)["accuracy"],
              "identity_pairs": int(len(same))}
    if fixed_threshold is not None:
        result["identity_acc_at_fixed"] = accuracy_at(transformed, same, fixed_threshold)
        result["identity_ceiling_at_fixed"] = accuracy_at(untransformed, same, fixed_threshold)
    return result


def faces_with_a_second_photo(root: Path, paths, limit: int, seed: int = 0):
    """Up to `limit` of `paths` (test-split faces) whose person has another photo in the
    identity gallery, drawn with default_rng(seed) - the faces whose transformed outputs
    can be verified. Returns (chosen indices into paths, their gallery rows, the gallery)."""
    with np.load(gallery_path(root, "celeba", "test"), allow_pickle=False) as f:
        gallery = {key: f[key] for key in f.files}
    position = {path: i for i, path in enumerate(gallery["path"])}
    identities = gallery["identity"].astype(str)
    eligible = [i for i, path in enumerate(paths) if (identities == identities[position[path]]).sum() > 1]
    chosen = np.random.default_rng(seed).choice(eligible, size=min(limit, len(eligible)), replace=False)
    return chosen, np.array([position[paths[i]] for i in chosen]), gallery


class IdentityCheck:
    """The shared identity-preservation protocol for outputs made from the test faces at `paths`:
    up to `limit` verifiable faces are chosen (faces_with_a_second_photo; `chosen`, indices into
    paths, ascending), and check(outputs), outputs (len(chosen), 3, H, W) in [-1, 1] made from
    those faces in that order, gives identity_preservation() of their dlib descriptors."""

    def __init__(self, root: Path, paths, limit: int, seed: int, eye_distance: float, eye_y: float):
        chosen, source, self.gallery = faces_with_a_second_photo(root, list(paths), limit, seed)
        order = np.argsort(chosen)
        self.chosen, self.source = chosen[order], source[order]
        self.seed, self.eye_distance, self.eye_y = seed, eye_distance, eye_y

    @property
    def faces(self) -> int:
        return len(self.chosen)

    def __call__(self, outputs) -> dict:
        from facegan.data.datasets import to_uint8

        descriptors = dlib_descriptors(to_uint8(outputs), self.eye_distance, self.eye_y)
        return identity_preservation(descriptors, self.source, self.gallery["dlib"],
                                     self.gallery["identity"].astype(str), self.seed)


def gallery_path(root: Path, name: str, split: str) -> Path:
    return Path(root) / "data" / "identity" / f"{name}_{split}.npz"


def run_identity_gallery(params, align, root) -> dict:
    """Stage `identity_gallery`: dlib descriptors of the real split (FaceNet's from the feature cache),
    and face verification on its identity pairs with each (FaceNet's accuracy is
    the proof of its conversion; dlib's is the ceiling for identity preservation)."""
    from facegan.data.datasets import load_images, set_folder
    from facegan.pretrained.features import load_features

    images, frame = load_images(set_folder(root, params.set), [params.split])
    dlib_desc = dlib_descriptors(images, align.eye_distance, align.eye_y)
    embeddings = load_features(root, params.set, frame["path"])["embedding"]
    path = gallery_path(root, params.set, params.split)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, dlib=dlib_desc, facenet=embeddings, identity=frame["identity"].to_numpy(str),
             path=frame["path"].to_numpy(str))
    report = {"images": len(frame), "identities": int(frame["identity"].nunique()), "size": int(images.shape[1])}
    try:
        report["dlib"] = verification(dlib_desc, frame["identity"], params.pairs, params.seed,
                                      fixed_threshold=DLIB_THRESHOLD)
        report["facenet"] = verification(embeddings, frame["identity"], params.pairs, params.seed)
    except ValueError as err:  # a split too small to hold one person twice: say so, measure nothing
        report["verification_unavailable"] = f"{params.set}/{params.split}: {err}"
    return report
