"""GeoGAN's evaluation: does the reference's attribute arrive, on the right geometry, keeping who a is?

On the aligned CelebA test split, every face a without the attribute is paired
with a seeded random test face b that has it; a_y = G(a, b).
- transfer success: the attribute judge (stage attr_classifier) sees the
  attribute in a_y; beside the rates it sees on a and on b, and its mean
  probability before (a) -> after (a_y); per pair in judge_probabilities.csv;
- identity: dlib verification of a_y against another photo of a's person,
  beside the untransformed ceiling (the shared protocol);
- landmark alignment of the warped reference: mean pixel distance of b's 68
  landmarks to a's, before the flow (b as it is) and after it, (1) as the
  flow implies: |l_a + f(l_a) - l_b|, and (2) as dlib measures: its landmarks
  found on warp(b) against a's (an instrument the flow never saw);
- FID/KID of the outputs against the real test faces WITH the attribute;
- ground truth on the London set (Smiling only): each person's neutral photo
  gets a smile from another person; the output is compared with the
  person's own smiling photo (FaceNet embedding distance and mouth-region L1),
  beside the neutral photo's own distance to it, and beside a reference that
  needs no training: the donor's mouth carried onto the neutral face exactly
  (the thin-plate spline through both photos' dlib landmarks), its mean colour
  matched, pasted over the mouth (`donor_mouth_paste`). It is what a perfect
  transfer of that donor's smile scores: another person's mouth, even aligned
  and colour-matched, is farther in pixels from one's own smile than one's own
  neutral mouth is, so the output's L1 is read against both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facegan.data.datasets import load_images, set_folder, to_tensor, to_uint8
from facegan.faces.pose import MOUTH


def batched(fn, *tensors, batch: int = 100) -> dict[str, torch.Tensor]:
    """fn over aligned batches of the tensors, outputs concatenated per key."""
    parts: dict[str, list] = {}
    for i in range(0, len(tensors[0]), batch):
        for key, value in fn(*(t[i:i + batch] for t in tensors)).items():
            parts.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values) for key, values in parts.items()}


def landmark_errors(flow: torch.Tensor, land_a: np.ndarray, land_b: np.ndarray) -> dict:
    """Mean pixel distance of b's landmarks to a's before the flow, and after it as the flow implies."""
    from facegan.faces.flow import flow_at, to_grid_coordinates

    size = flow.shape[-1]
    a = torch.from_numpy(land_a).float()
    moved = a + flow_at(flow, to_grid_coordinates(a, size)) * size / 2      # grid units -> pixels
    return {"landmark_error_before": float(np.linalg.norm(land_b - land_a, axis=-1).mean()),
            "landmark_error_after_flow": float((moved - torch.from_numpy(land_b)).norm(dim=-1).mean())}


def dlib_landmark_error(warped: torch.Tensor, land_a: np.ndarray, originals: torch.Tensor, land_b: np.ndarray,
                        workers: int = 2) -> dict:
    """dlib's own landmarks on warp(b) (and on b) against a's landmarks, on the faces where it finds one."""
    from facegan.faces.landmarks import detect_many

    found_warped, _ = detect_many(list(to_uint8(warped)), ["hog"], 200, workers)
    found_b, _ = detect_many(list(to_uint8(originals)), ["hog"], 200, workers)
    ok = ~np.isnan(found_warped).any(axis=(1, 2)) & ~np.isnan(found_b).any(axis=(1, 2))
    if not ok.any():
        return {"dlib_landmark_faces": 0}
    return {"dlib_landmark_faces": int(ok.sum()),
            "dlib_landmark_error_before": float(np.linalg.norm(found_b[ok] - land_a[ok], axis=-1).mean()),
            "dlib_landmark_error_after_flow": float(np.linalg.norm(found_warped[ok] - land_a[ok], axis=-1).mean())}


def mouth_l1(x: torch.Tensor, y: torch.Tensor, landmarks: np.ndarray, margin: int = 3) -> np.ndarray:
    """Per-pair L1 on [0, 1] inside the box of each face's mouth landmarks (+ margin)."""
    boxes = (mouth_box(points, margin, x.shape[-1]) for points in landmarks)
    return np.array([float(((x[i, :, rows, cols] - y[i, :, rows, cols]).abs() / 2).mean())
                     for i, (rows, cols) in enumerate(boxes)])


def mouth_box(points: np.ndarray, margin: int, side: int) -> tuple[slice, slice]:
    """(rows, cols) of the box around one face's mouth landmarks, grown by margin, inside the image."""
    (x0, y0), (x1, y1) = points[MOUTH].min(0), points[MOUTH].max(0)
    return (slice(max(0, int(y0) - margin), min(side, int(np.ceil(y1)) + margin)),
            slice(max(0, int(x0) - margin), min(side, int(np.ceil(x1)) + margin)))


def donor_mouth_paste(a: torch.Tensor, land_a: np.ndarray, donor: torch.Tensor, land_donor: np.ndarray,
                      margin: int = 3) -> torch.Tensor:
    """The training-free reference above: warp(donor) by the spline through the 68 dlib landmarks of both,
    shifted to a's mean colour in a's mouth box (+ margin), pasted there through a 5 x 5 feathered box."""
    from facegan.faces.flow import thin_plate_flow, to_grid_coordinates, warp

    side = a.shape[-1]
    grid = [to_grid_coordinates(torch.from_numpy(points).float(), side) for points in (land_a, land_donor)]
    warped = warp(donor, thin_plate_flow(*grid, side))
    box = torch.zeros(len(a), 1, side, side)
    for i, points in enumerate(land_a):
        box[(i, slice(None)) + mouth_box(points, margin, side)] = 1
    mean = lambda x: (x * box).sum((2, 3), keepdim=True) / box.sum((2, 3), keepdim=True).clamp_min(1)
    feather = torch.nn.functional.avg_pool2d(box, 5, 1, 2, count_include_pad=False)
    return (a + feather * (warped - mean(warped) + mean(a) - a)).clamp(-1, 1)


def london_ground_truth(transfer, root: Path, seed: int, context) -> dict:
    """Neutral London faces smiled by G with another person's smile, against their own smiling photo."""
    from facegan.devices import inference_autocast
    from facegan.pretrained.facenet import load_converted

    folder = set_folder(root, "london")
    images, frame = load_images(folder)
    with np.load(folder / "landmarks.npz", allow_pickle=False) as f:
        position = {p: i for i, p in enumerate(f["path"].astype(str))}
        aligned = f["aligned"]
    frame = frame.assign(row=np.arange(len(frame)))
    pivot = frame.pivot_table(index="identity", columns="expression", values="row", aggfunc="first").dropna()
    if len(pivot) < 2:
        return {"london_people": int(len(pivot))}
    neutral, smiling = pivot["neutral"].astype(int).to_numpy(), pivot["smiling"].astype(int).to_numpy()
    donor = (np.arange(len(pivot)) + np.random.default_rng(seed).integers(1, len(pivot), len(pivot))) % len(pivot)
    a, own_smile, reference = (to_tensor(images[rows]) for rows in (neutral, smiling, smiling[donor]))
    outputs = batched(transfer, a, reference)["output"]
    landmarks_of = lambda rows: aligned[[position[p] for p in frame["path"].to_numpy()[rows]]]
    pasted = donor_mouth_paste(a, landmarks_of(neutral), reference, landmarks_of(smiling[donor]))
    facenet = load_converted(root)
    with inference_autocast("cpu"):
        embed = {k: batched(lambda x: {"e": facenet(x)}, v)["e"] for k, v in
                 {"out": outputs, "neutral": a, "smile": own_smile}.items()}
    mouth_landmarks = landmarks_of(smiling)
    result = {"london_people": int(len(pivot)),
              "london_facenet_distance_output_to_own_smile": float((embed["out"] - embed["smile"]).norm(dim=1).mean()),
              "london_facenet_distance_neutral_to_own_smile": float((embed["neutral"] - embed["smile"]).norm(dim=1).mean()),
              "london_mouth_l1_output_to_own_smile": float(mouth_l1(outputs, own_smile, mouth_landmarks).mean()),
              "london_mouth_l1_neutral_to_own_smile": float(mouth_l1(a, own_smile, mouth_landmarks).mean()),
              "london_mouth_l1_donor_paste_to_own_smile": float(mouth_l1(pasted, own_smile, mouth_landmarks).mean()),
              # the metric's scale: the person's own smile moved 2 px scores about what the neutral photo does
              "london_mouth_l1_own_smile_moved_2px": float(mouth_l1(own_smile.roll(2, -1), own_smile,
                                                                    mouth_landmarks).mean())}
    context.save_grid(torch.cat([a[:8], reference[:8], outputs[:8], pasted[:8], own_smile[:8]]),
                      ["neutral", "smile donor", "G(neutral, donor)", "donor mouth pasted", "own smile"],
                      "london_ground_truth.png", 8)
    return result


def evaluate_transfer(transfer, attribute: str, context) -> dict:
    """transfer(a, b) -> {"output", "flow", "warped", "mask"}: G(a, b_y) and its parts; attribute: the one it
    moves; context: methods.base.EvalContext (own: evaluate.geogan)."""
    from facegan.data.datasets import faces_with_landmarks
    from facegan.metrics.fid import load_reference, reference_path, reference_subset

    root, settings, own = context.root, context.shared, context.own
    faces, landmarks, frame = faces_with_landmarks(root, "test")
    present = frame[attribute].to_numpy() == 1
    a_rows, b_rows = np.flatnonzero(~present), np.flatnonzero(present)
    partner = np.random.default_rng(settings.seed).choice(b_rows, size=len(a_rows), replace=True)
    a, b = to_tensor(faces[a_rows]), to_tensor(faces[partner])
    parts = batched(transfer, a, b, batch=settings.batch_size)
    outputs = parts["output"]

    judge = context.attribute_judge()
    column = judge.column(attribute)
    probability = {name: judge.predict(x)[:, column] for name, x in (("output", outputs), ("a", a), ("b", b))}
    seen = {name: p >= 0.5 for name, p in probability.items()}
    result = {"attribute": attribute, "pairs": int(len(a_rows)),
              "transfer_success": float(seen["output"].mean()), "judge_sees_attribute_on_a": float(seen["a"].mean()),
              "judge_sees_attribute_on_b": float(seen["b"].mean()),
              "judge_probability_a": float(probability["a"].mean()),
              "judge_probability_output": float(probability["output"].mean())}
    paths = frame["path"].to_numpy()
    context.report_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"a": paths[a_rows], "b": paths[partner], "probability_a": probability["a"].round(4),
                  "probability_output": probability["output"].round(4), "probability_b": probability["b"].round(4)}
                 ).to_csv(context.report_dir / "judge_probabilities.csv", index=False)

    check = context.identity_check(frame["path"].to_numpy()[a_rows], own.identity_faces)
    result["identity_faces"] = check.faces
    result.update(check(outputs[check.chosen]))
    result.update(landmark_errors(parts["flow"], landmarks[a_rows], landmarks[partner]))
    sample = np.random.default_rng(settings.seed).permutation(len(a_rows))[:own.landmark_faces]
    result.update(dlib_landmark_error(parts["warped"][sample], landmarks[a_rows][sample], b[sample],
                                      landmarks[partner][sample]))
    split_reference = load_reference(reference_path(root, "celeba", "test", faces.shape[1]))
    reference = reference_subset(split_reference, frame["path"].to_numpy(dtype=str)[b_rows])
    result.update(context.fid_kid(outputs[:settings.n_samples], reference))
    result["fid_reference"] = f"{len(b_rows)} real test faces with {attribute}"
    if attribute == "Smiling":
        result.update(london_ground_truth(transfer, root, settings.seed, context))
    shown = np.arange(min(8, len(a_rows)))
    context.save_grid(torch.cat([a[shown], b[shown], parts["warped"][shown],
                                 parts["mask"][shown].expand(-1, 3, -1, -1) * 2 - 1, outputs[shown]]),
                      ["source a", "reference b", "warp(b)", "mask", "output"], "transfers.png", per_row=len(shown))
    return result
