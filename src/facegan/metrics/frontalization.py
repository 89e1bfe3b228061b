"""TP-GAN's evaluation: does frontalising a face help a recognizer across pose?

Protocol (after the paper's Multi-PIE identification, on the held-out people):
the gallery is each test person's frontal photo under one flash
(`evaluate.tpgan.gallery_flash`); every other test image is a probe. A probe is
identified as the gallery person nearest to it (rank 1), once from the raw
input and once from its frontalisation, by two recognizers:
- FaceNet (the converted model; cosine on its unit embeddings of the whole
  crop). TP-GAN's L_ip used FaceNet features, so its figures may flatter;
- dlib (its own pipeline: detector, 68 landmarks, chip, ResNet descriptor,
  Euclidean). TP-GAN never saw dlib. Where dlib finds no face, the probe
  counts as a miss (a wrong identification), and the found rate is reported.
Results are grouped by |yaw| (15 ... 90; 0 = the other flashes' frontals).
The gallery of the test people alone is small (6 in the subset: chance 1/6),
so each figure is also given `_with_distractors`: the training people's
frontal photos join the gallery (30 people, chance 1/30; the training people
are never probes).

Face-region protocol (`face_region_*`): the same identification and verification
with every image cut to its face (`face_region`: grey outside the hull of the
68 landmarks, the brows raised to keep the forehead, the box scaled to the
side): inputs at their own landmarks (the multipie stage's rule), frontal
photos and frontalisations at the frontal template. The same-session gallery
shares clothes, hair and background with every probe; here they cannot help.
Verification (`verification_facenet_*`): balanced genuine / impostor pairs of
probe and gallery photo, accuracy per |yaw| with a cross-validated threshold.

UMIST (never trained on): 20 people turning from profile to frontal; the last
image of each sequence (the most frontal) is the gallery, the others probes.
Its pose is only the position in the sequence; yaw ~ 90 (1 - i / (n - 1)),
rounded to 15 degrees, and UMIST's faces turn to the image's right (positive
yaw in Multi-PIE's camera order). The grey 112 x 92 crops are padded to a
square, resized to the model's side, and the patch centres are the yaw
model's at that yaw: UMIST's framing is looser than Multi-PIE's crops.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facegan.data.datasets import to_tensor, to_uint8
from facegan.data.multipie import frontal_photos, pad_to_square, resize_square


def rank1(probes: np.ndarray, probe_ids, gallery: np.ndarray, gallery_ids, metric: str) -> np.ndarray:
    """(P,) booleans: is the nearest gallery entry the probe's person? NaN rows (no face found)
    count as wrong."""
    probes, gallery = np.asarray(probes, np.float64), np.asarray(gallery, np.float64)
    gallery_ids, probe_ids = np.asarray(gallery_ids).astype(str), np.asarray(probe_ids).astype(str)
    if metric == "cosine":
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)   # noqa: E731
        score = unit(probes) @ unit(gallery).T
    elif metric == "euclidean":
        score = -np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    else:
        raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
    score = np.where(np.isnan(score), -np.inf, score)
    best = score.argmax(1)
    valid = np.isfinite(score).any(1)
    return valid & (gallery_ids[best] == probe_ids)


def by_group(values: np.ndarray, groups) -> dict[str, float]:
    groups = np.asarray(groups)
    return {str(g): float(np.mean(values[groups == g])) for g in sorted(set(groups.tolist()))}


def symmetry_error(images: torch.Tensor) -> float:
    """Mean |I - mirror(I)| on [0, 1]: 0 for a perfectly symmetric face about the crop's centre."""
    return float(((images.float() - images.float().flip(3)).abs() / 2).mean())


def collapse_by_group(outputs, truth, ids, groups, lighting=None) -> dict[str, float]:
    """Per group: the mean distance between outputs of DIFFERENT people (under the same `lighting`,
    where given: so a change of flash, which moves every pixel, is not taken for a different face) over the
    same mean between their true frontals. 1: the outputs differ as much as the people do; 0: one face for
    everyone (the L1 optimum of an under-trained generator, the mean face). outputs, truth: images (pixel
    distance) or (N, D) descriptors of them (Euclidean)."""
    ids, groups = np.asarray(ids).astype(str), np.asarray(groups)
    lighting = np.zeros(len(ids)) if lighting is None else np.asarray(lighting)
    outputs, truth = (torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float().flatten(1)
                      for x in (outputs, truth))
    result = {}
    for g in sorted(set(groups.tolist())):
        rows = np.flatnonzero(groups == g)
        different = torch.from_numpy((ids[rows][:, None] != ids[rows][None, :])
                                     & (lighting[rows][:, None] == lighting[rows][None, :]))
        if not different.any():
            continue
        spread = [torch.cdist(x[rows], x[rows])[different].mean() for x in (outputs, truth)]
        result[str(g)] = float(spread[0] / spread[1].clamp_min(1e-8))
    return result


def collapse_measures(outputs: torch.Tensor, truth: torch.Tensor, rows: pd.DataFrame, template: np.ndarray) -> dict:
    """The collapse measure per |yaw| twice: on pixels (the issue's definition), and on dlib descriptors cut
    at the fixed frontal template (outputs and truths share that framing). Pixels alone can be passed by
    outputs that copy each input's tones onto one face (different colours, same face); dlib's descriptor
    ignores tone, so only a person-specific structure passes it. `collapse_min` is the smaller of the two
    minima over yaw."""
    from facegan.metrics.identity import descriptors_at, fixed_shape

    ids, abs_yaw, flash = rows["identity"], rows["yaw"].abs().to_numpy(), rows["flash"]
    shape = fixed_shape(template, outputs.shape[-1])
    # each true frontal once (a person's frontal is the target of all 13 yaws)
    _, first, back = np.unique(rows["frontal_path"].to_numpy(str), return_index=True, return_inverse=True)
    described = [descriptors_at(to_uint8(outputs), shape),
                 descriptors_at(to_uint8(truth[torch.from_numpy(first)]), shape)[back]]
    result = {"collapse_by_yaw": collapse_by_group(outputs, truth, ids, abs_yaw, flash),
              "collapse_dlib_by_yaw": collapse_by_group(*described, ids, abs_yaw, flash)}
    minima = [min(result[k].values(), default=None) for k in ("collapse_by_yaw", "collapse_dlib_by_yaw")]
    result["collapse_pixels_min"], result["collapse_dlib_min"] = minima
    result["collapse_min"] = None if None in minima else min(minima)
    if result["collapse_min"] is None:
        result["collapse_note"] = "no two test people share a flash at any yaw: no collapse measure"
    return result


def verification_by_group(probes: np.ndarray, probe_ids, gallery: np.ndarray, gallery_ids, groups,
                          seed: int = 0) -> dict[str, float]:
    """Per group: verification accuracy (the LFW protocol: threshold cross-validated over folds) of balanced
    pairs, each probe with its person's gallery photo (genuine) and with one other gallery person's drawn at
    random (impostor); cosine distance of FaceNet's unit embeddings. Rank-1 asks whether the own frontal is the
    nearest of 30; this asks whether one distance threshold, fitted per yaw, separates own from stranger
    across people. dlib is left out: its detector misses most profiles (identification counts those)."""
    from facegan.metrics.identity import cross_validated_accuracy

    probes, gallery = np.asarray(probes, np.float64), np.asarray(gallery, np.float64)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)   # noqa: E731
    probe_ids, gallery_ids, groups = (np.asarray(x).astype(str) for x in (probe_ids, gallery_ids, groups))
    rng = np.random.default_rng(seed)
    own = np.array([np.flatnonzero(gallery_ids == person)[0] for person in probe_ids])
    other = np.array([rng.choice(np.flatnonzero(gallery_ids != person)) for person in probe_ids])
    cosine = lambda i: 1 - (unit(probes) * unit(gallery[i])).sum(1)   # noqa: E731
    distances, same = np.r_[cosine(own), cosine(other)], np.r_[np.ones(len(own), bool), np.zeros(len(own), bool)]
    pair_groups = np.r_[groups, groups]
    return {g: cross_validated_accuracy(distances[pair_groups == g], same[pair_groups == g], seed=seed)["accuracy"]
            for g in sorted(set(groups.tolist()), key=lambda v: (len(v), v))}


def face_region(images: np.ndarray, landmarks: np.ndarray, forehead: float = 0.3) -> np.ndarray:
    """The face alone, for an identification that clothes, hair and background cannot help (a same-session
    gallery shares them with every probe): outside the convex hull of the 68 landmarks, with the brows raised
    by `forehead` x the brow-to-chin height to keep the forehead, the image is grey; the hull's square box is
    then scaled to the image's side. images (N, S, S, 3) uint8; landmarks (N, 68, 2) or one (68, 2) for all."""
    import cv2

    side = images.shape[1]
    landmarks = np.broadcast_to(np.asarray(landmarks, np.float32), (len(images), 68, 2))
    out = np.empty_like(images)
    for k, (image, points) in enumerate(zip(images, landmarks)):
        brows = points[17:27].copy()
        brows[:, 1] -= forehead * (points[:, 1].max() - brows[:, 1].mean())
        hull = cv2.convexHull(np.concatenate([points, brows]).astype(np.float32)).reshape(-1, 2)
        mask = np.zeros((side, side), np.uint8)
        cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
        grey = np.where(mask[..., None] > 0, image, np.uint8(128))
        (x0, y0), (x1, y1) = hull.min(0), hull.max(0)
        box = max(x1 - x0, y1 - y0, 1.0)
        scale = side / box
        matrix = np.float32([[scale, 0, side / 2 - scale * (x0 + x1) / 2], [0, scale, side / 2 - scale * (y0 + y1) / 2]])
        out[k] = cv2.warpAffine(grey, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
    return out


def identification(raw: np.ndarray, frontalized: torch.Tensor, probe_ids, gallery: np.ndarray, gallery_ids,
                   groups, facenet, detectors, distractors: tuple[np.ndarray, np.ndarray] | None = None,
                   workers: int = 2) -> dict:
    """Rank-1 by group for FaceNet and dlib, raw inputs vs frontalised ones, against `gallery`
    and, with `distractors` (images, ids of people who are never probes), against both.
    raw, gallery, distractor images: (N, H, W, 3) uint8; frontalized: (N, 3, H, W) in [-1, 1]."""
    from facegan.devices import inference_autocast
    from facegan.metrics.identity import detected_dlib_descriptors, facenet_embeddings

    gallery_ids = np.asarray(gallery_ids).astype(str)
    everyone, everyone_ids = gallery, gallery_ids
    if distractors is not None:
        everyone = np.concatenate([gallery, distractors[0]])
        everyone_ids = np.concatenate([gallery_ids, np.asarray(distractors[1]).astype(str)])
    images = {"raw": to_tensor(raw), "frontalized": frontalized.float()}
    features = {}
    with inference_autocast("cpu"):
        features["facenet"] = (facenet_embeddings(to_tensor(everyone), facenet),
                               {kind: facenet_embeddings(probes, facenet) for kind, probes in images.items()})
    everyone_dlib, everyone_found = detected_dlib_descriptors(everyone, detectors, workers=workers)
    probe_dlib, found = {}, {}
    for kind, probes in images.items():
        probe_dlib[kind], found[kind] = detected_dlib_descriptors(to_uint8(probes), detectors, workers=workers)
    features["dlib"] = (everyone_dlib, probe_dlib)

    n = len(gallery)
    result = {"gallery_people": int(len(set(gallery_ids.tolist()))), "dlib_gallery_found": int(everyone_found[:n].sum())}
    result["chance"] = 1.0 / result["gallery_people"]
    for recognizer, metric in (("facenet", "cosine"), ("dlib", "euclidean")):
        reference, probes = features[recognizer]
        for kind in images:
            hits = rank1(probes[kind], probe_ids, reference[:n], gallery_ids, metric)
            result[f"rank1_{recognizer}_{kind}"] = by_group(hits, groups)
            if distractors is not None:
                hits = rank1(probes[kind], probe_ids, reference, everyone_ids, metric)
                result[f"rank1_{recognizer}_{kind}_with_distractors"] = by_group(hits, groups)
    reference, probes = features["facenet"]
    for kind in images:
        result[f"verification_facenet_{kind}"] = verification_by_group(probes[kind], probe_ids, reference,
                                                                      everyone_ids, groups)
    for kind in images:
        result[f"dlib_face_found_{kind}"] = by_group(found[kind].astype(float), groups)
    result["probes_per_group"] = {str(g): int(c) for g, c in zip(*np.unique(np.asarray(groups), return_counts=True))}
    if distractors is not None:
        result["gallery_people_with_distractors"] = int(len(set(everyone_ids.tolist())))
        result["chance_with_distractors"] = 1.0 / result["gallery_people_with_distractors"]
    return result


def evaluate_frontalization(frontalize, centres_at, facenet, size: int, context) -> dict:
    """frontalize(crops, centres) -> frontal crops; centres_at(yaw) -> (4, 2) patch centres; facenet: the
    fixed recognizer; size: the crops' side; context: methods.base.EvalContext (own: evaluate.tpgan)."""
    from facegan.data.multipie import load_pairs
    from facegan.metrics.pixels import l1 as l1_error, psnr

    root, own = context.root, context.own
    test = load_pairs(root, "test", size)
    rows = test["rows"]
    inputs, truth = to_tensor(test["inputs"]), to_tensor(test["frontals"])
    centres = torch.from_numpy(test["labels"][:, :8].reshape(-1, 4, 2))
    outputs = frontalize(inputs, centres)
    abs_yaw = rows["yaw"].abs().to_numpy()

    result = {"test_people": int(rows["identity"].nunique()), "test_images": len(rows), "size": size}
    l1 = l1_error(outputs, truth)
    scores = psnr(outputs, truth)
    result.update({"l1": float(l1.mean()), "psnr": float(scores.mean()), "l1_by_yaw": by_group(l1, abs_yaw),
                   "psnr_by_yaw": by_group(scores, abs_yaw), "symmetry_error": symmetry_error(outputs),
                   "symmetry_error_true_frontal": symmetry_error(truth)})
    result.update(collapse_measures(outputs, truth, rows, test["frontal_template"]))

    gallery_rows = np.flatnonzero((rows["yaw"] == 0).to_numpy() & (rows["flash"] == own.gallery_flash).to_numpy())
    if len(gallery_rows) != result["test_people"]:
        raise ValueError(f"tpgan: {len(gallery_rows)} frontal photos under flash {own.gallery_flash} for "
                         f"{result['test_people']} test people; set evaluate.tpgan.gallery_flash to a flash every "
                         f"person has")
    probe_rows = np.setdiff1d(np.arange(len(rows)), gallery_rows)
    result["gallery_flash"] = own.gallery_flash
    ids = rows["identity"].to_numpy()
    # the training people's frontal photos as distractors: a harder gallery than the test people alone
    distractors = frontal_photos(root, "train", own.gallery_flash, size)
    result.update(identification(test["inputs"][probe_rows], outputs[probe_rows], ids[probe_rows],
                                 test["inputs"][gallery_rows], ids[gallery_rows], abs_yaw[probe_rows], facenet,
                                 own.detectors, distractors))
    # the face-region protocol: the same identification with every image cut to its face (inputs at their own
    # landmarks, frontal photos and frontalisations at the frontal template)
    template, landmarks = test["frontal_template"], test["input_landmarks"]
    region = identification(face_region(test["inputs"][probe_rows], landmarks[probe_rows]),
                            to_tensor(face_region(to_uint8(outputs[probe_rows]), template)), ids[probe_rows],
                            face_region(test["inputs"][gallery_rows], template), ids[gallery_rows],
                            abs_yaw[probe_rows], facenet, own.detectors,
                            (face_region(distractors[0], template), distractors[1]))
    result.update({f"face_region_{k}": v for k, v in region.items() if k.startswith(("rank1_", "verification_"))})
    face_region_grid(rows, test["inputs"], outputs, landmarks, template, own.gallery_flash, context)
    multipie_grid(rows, inputs, outputs, truth, own.gallery_flash, context)
    if own.umist:
        result["umist"] = evaluate_umist(frontalize, centres_at, facenet, size, context)
    return result


def multipie_grid(rows, inputs, outputs, truth, flash, context) -> None:
    """Two test people under the gallery flash: input, frontalised and true frontal at each yaw."""
    people = sorted(rows["identity"].unique())[:2]
    tiles, labels = [], []
    for person in people:
        chosen = np.array(rows[(rows["identity"] == person) & (rows["flash"] == flash)].sort_values("yaw").index)
        tiles += [inputs[chosen], outputs[chosen], truth[chosen]]
        labels += [f"{person} input", "frontalized", "true frontal"]
    context.save_grid(torch.cat(tiles), labels, "frontalization_by_yaw.png", per_row=len(tiles[0]))


def face_region_grid(rows, inputs, outputs, landmarks, template, flash, context) -> None:
    """What the face-region protocol's recognizers see: one test person's inputs and frontalisations, cut."""
    person = sorted(rows["identity"].unique())[0]
    chosen = np.array(rows[(rows["identity"] == person) & (rows["flash"] == flash)].sort_values("yaw").index)
    tiles = [to_tensor(face_region(inputs[chosen], landmarks[chosen])),
             to_tensor(face_region(to_uint8(outputs[chosen]), template))]
    context.save_grid(torch.cat(tiles), [f"{person} input, face region", "frontalized, face region"],
                      "face_region.png", per_row=len(chosen))


def umist_inputs(root: Path, size: int) -> tuple[np.ndarray, pd.DataFrame]:
    """UMIST's raw grey crops as (N, size, size, 3) uint8 (padded square with the edge colour) and
    the manifest with `yaw_estimate`."""
    from PIL import Image

    from facegan.data.manifest import read_manifest

    folder = Path(root) / "data" / "raw" / "umist"
    frame = read_manifest(folder)
    images = [resize_square(pad_to_square(np.asarray(Image.open(folder / path).convert("RGB"))), size)
              for path in frame["path"]]
    position = frame["sequence_index"].to_numpy(float) / np.maximum(frame["sequence_length"].to_numpy(float) - 1, 1)
    frame = frame.assign(yaw_estimate=(np.round(90 * (1 - position) / 15) * 15).astype(int))
    return np.stack(images), frame


def evaluate_umist(frontalize, centres_at, facenet, size: int, context) -> dict:
    images, frame = umist_inputs(context.root, size)
    centres = torch.from_numpy(np.stack([centres_at(y) for y in frame["yaw_estimate"]]).astype(np.float32))
    outputs = frontalize(to_tensor(images), centres)
    last = (frame["sequence_index"] == frame["sequence_length"] - 1).to_numpy()
    identities = frame["identity"].astype(str).to_numpy()
    result = {"people": int(frame["identity"].nunique()), "images": len(frame),
              "pose": "yaw_estimate = 90 (1 - sequence position), rounded to 15 degrees"}
    result.update(identification(images[~last], outputs[~last], identities[~last], images[last], identities[last],
                                 frame["yaw_estimate"].to_numpy()[~last], facenet, context.own.detectors))
    chosen = []
    for person in sorted(frame["identity"].unique())[:4]:
        sequence = np.flatnonzero(identities == person)
        chosen.append(sequence[np.linspace(0, len(sequence) - 1, 8).round().astype(int)])
    tiles, labels = [], []
    for person_rows in chosen:
        tiles += [to_tensor(images[person_rows]), outputs[person_rows]]
        labels += [f"{identities[person_rows[0]]} input", "frontalized"]
    context.save_grid(torch.cat(tiles), labels, "umist_frontalization.png", per_row=8)
    return result
