"""Multi-PIE importer: `<person>/<person>_<session>_<recording>_<camera>_<flash>[_anything].png`.

The public Multi-PIE naming (Gross et al. 2010) with the crops circulated with
CR-GAN / TP-GAN re-implementations. The camera decides the yaw; camera 051 is
the frontal one. Files are read in name order, so `max_images` keeps whole
people first (13 cameras x 6 flashes = 78 files each in the mirror's subset).

TP-GAN's training pairs: every image (any yaw) -> the frontal image (camera 051)
of the same person, session, recording and flash (`frontal_pairs`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from facegan.config import SourceParams
from facegan.data.images import decode
from facegan.data.quality import DataError, SetQuality

FRONTAL_CAMERA = "051"
# Multi-PIE's 13 cameras at head height, left profile to right profile (degrees of yaw).
CAMERA_YAW = {"110": -90, "120": -75, "090": -60, "080": -45, "130": -30, "140": -15, "051": 0,
              "050": 15, "041": 30, "190": 45, "200": 60, "010": 75, "240": 90}
NAME = re.compile(r"^(?P<person>\d{3})_(?P<session>\d{2})_(?P<recording>\d{2})_(?P<camera>\d{3})_(?P<flash>\d{2})"
                  r"(?:_.*)?$")


def parse_name(stem: str) -> dict | None:
    """The fields of a Multi-PIE file stem, or None when it does not follow the naming."""
    match = NAME.match(stem)
    return match.groupdict() if match else None


def camera_to_yaw(camera: str) -> int:
    if camera not in CAMERA_YAW:
        raise KeyError(f"camera {camera!r} is not one of Multi-PIE's 13 head-height cameras {sorted(CAMERA_YAW)}")
    return CAMERA_YAW[camera]


def import_multipie(src: Path, source: SourceParams, size: int) -> tuple[pd.DataFrame, np.ndarray, SetQuality]:
    """The release's usable images as a manifest and (N, size, size, 3) uint8 (resized square), and
    what was skipped and why."""
    quality = SetQuality("multipie")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise DataError(f"multipie: no images under {src} (expected <person>/<person>_<session>_<recording>_"
                        f"<camera>_<flash>*.png)")
    if source.max_images:
        files = files[:source.max_images]
    records, images = [], []
    for path in files:
        quality.read += 1
        relative = str(path.relative_to(src))
        fields = parse_name(path.stem)
        if fields is None:
            quality.skip(relative, "name_not_multipie")
            continue
        if fields["camera"] not in CAMERA_YAW:
            quality.skip(relative, "camera_not_at_head_height")
            continue
        image, reason = decode(path)
        if image is None:
            quality.skip(relative, reason)
            continue
        images.append(resize_square(np.asarray(image.convert("RGB")), size))
        quality.kept += 1
        records.append({"path": path.stem, "identity": fields["person"], **fields,
                        "yaw": camera_to_yaw(fields["camera"])})
    return (pd.DataFrame.from_records(records), np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
            quality)


def frontal_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """(input row, frontal row) index pairs: each image -> camera 051 of the same person, session,
    recording and flash. Images whose frontal partner is missing get no pair (counted by the caller)."""
    key = ["identity", "session", "recording", "flash"]
    frame = frame.astype({c: str for c in key}).reset_index(drop=True)   # a manifest read back has 51 for "051"
    frontal = frame[frame["camera"].astype(int) == int(FRONTAL_CAMERA)].reset_index().rename(columns={"index": "frontal_row"})
    if frontal.duplicated(key).any():
        raise DataError(f"multipie: several frontal images for one {'/'.join(key)}: "
                        f"{frontal[frontal.duplicated(key, keep=False)]['path'].tolist()[:4]}")
    merged = frame.reset_index().rename(columns={"index": "input_row"}).merge(
        frontal[key + ["frontal_row"]], on=key, how="inner")
    return merged[["input_row", "frontal_row", "identity", "yaw"]].sort_values("input_row").reset_index(drop=True)


# ---------------------------------------------------------------- stage `multipie`
def landmarks_by_rule(frame: pd.DataFrame, detected: np.ndarray, trusted_yaw: float) -> dict:
    """The landmarks TP-GAN's local pathways use (see faces/pose.py): the detector's where
    |yaw| <= trusted_yaw and it found the face, else the yaw model fitted on the TRAINING
    people's mean detector positions per camera at |yaw| <= trusted_yaw. The frontal
    template is the training people's mean frontal landmarks."""
    from facegan.faces.pose import fit_yaw_model, predict_landmarks

    found = ~np.isnan(detected).any(axis=(1, 2))
    yaws = frame["yaw"].to_numpy()
    trusted = found & (np.abs(yaws) <= trusted_yaw)
    fit_rows = trusted & (frame["split"] == "train").to_numpy()
    fit_yaws = sorted(set(yaws[fit_rows]))
    if not (fit_rows & (yaws == 0)).any():
        raise DataError("multipie: the detector found no frontal training face; the frontal template needs some")
    model = fit_yaw_model(fit_yaws, np.stack([detected[fit_rows & (yaws == y)].mean(0) for y in fit_yaws]))
    used = np.stack([detected[i] if trusted[i] else predict_landmarks(model, yaws[i]) for i in range(len(yaws))])
    return {"landmarks": used.astype(np.float32), "source": np.where(trusted, "detector", "yaw_model"),
            "yaw_model": model.astype(np.float32),
            "frontal_template": detected[fit_rows & (yaws == 0)].mean(0).astype(np.float32),
            "model_yaws": np.array(fit_yaws)}


def run_multipie(params, mirror: Path, root: Path) -> dict:
    """Import, split by person, landmarks by rule, frontal pairs -> data/multipie/; the quality part
    and reports/metrics/multipie.json."""
    import shutil

    from facegan.data.datasets import write_image_set
    from facegan.data.manifest import assign_splits
    from facegan.data.quality import write_part
    from facegan.faces.landmarks import detect_many
    from facegan.reports import write_metrics

    out, quality_path = root / "data" / "multipie", root / "reports" / "data_quality" / "multipie.json"
    source = params.multipie
    src = mirror / source.folder
    if not src.is_dir():
        raise DataError(f"multipie: {src} not found; point FACEGAN_DATA or data.mirror at the folder holding "
                        f"{source.folder}/ (README, section Data)")
    shutil.rmtree(out, ignore_errors=True)
    frame, images, quality = import_multipie(src, source, source.size)
    if frame.empty:
        raise DataError(f"multipie: no usable image under {src}")
    frame = assign_splits(frame, source.split, params.data.seed)
    # Beyond trusted_yaw the yaw model places the landmarks, so the detectors run only up to it (on
    # profiles HOG misses and the CNN detector, the stage's slowest part, rarely helps).
    near = np.flatnonzero(np.abs(frame["yaw"].to_numpy()) <= source.trusted_yaw)
    detected = np.full((len(frame), 68, 2), np.nan, np.float32)
    detectors = np.full(len(frame), "not_run", dtype=object)
    found, names = detect_many(list(images[near]), source.detectors, source.detect_side, source.workers)
    detected[near], detectors[near] = found, [d or "none" for d in names]
    rule = landmarks_by_rule(frame, detected, source.trusted_yaw)
    frame["detector"] = detectors
    frame["landmark_source"] = rule["source"]
    pairs = frontal_pairs(frame)
    unpaired = len(frame) - len(pairs)
    if unpaired:
        quality.note("no_frontal_partner", unpaired)
    write_image_set(out, frame, images)
    pairs.to_csv(out / "pairs.csv", index=False)
    np.savez(out / "landmarks.npz", path=frame["path"].to_numpy(str), detected=detected, **rule)
    quality.write_skipped(out / "skipped.csv")
    write_part(quality_path, "multipie", {"multipie": quality})
    quality.require(params.ingest.min_kept_fraction, "ingest.min_kept_fraction")
    found, tried = ~frame["detector"].isin(["none", "not_run"]), frame["detector"] != "not_run"
    summary = {"images": len(frame), "people": {s: int(frame.loc[frame["split"] == s, "identity"].nunique())
                                             for s in ("train", "val", "test")},
            "pairs": len(pairs), "unpaired": unpaired,
            "detector_found_rate_by_yaw": {int(y): float(found[tried & (frame["yaw"] == y)].mean())
                                           for y in sorted(frame.loc[tried, "yaw"].unique())},
            "yaw_model_rows": int((rule["source"] == "yaw_model").sum())}
    return write_metrics(root, "multipie", summary)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad the short side (both ends, repeating the edge) to a square."""
    side = max(image.shape[:2])
    pad_y, pad_x = side - image.shape[0], side - image.shape[1]
    widths = [(pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="edge")


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))


def load_pairs(root: Path, split: str, size: int) -> dict:
    """TP-GAN's pairs of one split from data/multipie at `size` pixels: inputs and frontals
    (N, size, size, 3) uint8, labels (N, 9) = the input's four patch centres (x, y, scaled to
    `size`) and its yaw, the pairs' rows (input path, identity, yaw, flash, frontal path), the inputs'
    landmarks (N, 68, 2; the stage's rule: detector or yaw model) and the frontal template (68, 2): the
    training people's mean frontal landmarks, both at `size`."""
    from facegan.data.datasets import read_image_set
    from facegan.faces.pose import PATCHES, patch_centres

    folder = Path(root) / "data" / "multipie"
    if not (folder / "pairs.csv").exists():
        raise FileNotFoundError(f"{folder}/pairs.csv not found: run `dvc repro multipie`")
    stored, frame = read_image_set(folder)
    pairs = pd.read_csv(folder / "pairs.csv")
    with np.load(folder / "landmarks.npz", allow_pickle=False) as f:
        landmarks, paths, template = f["landmarks"], f["path"].astype(str), f["frontal_template"]
    if list(paths) != frame["path"].astype(str).tolist():
        raise DataError(f"{folder}/landmarks.npz does not match manifest.csv row for row: run `dvc repro multipie`")
    pairs = pairs[frame.loc[pairs["input_row"], "split"].to_numpy() == split].reset_index(drop=True)
    if pairs.empty:
        raise DataError(f"multipie: no pairs in split {split!r}")
    images = {}

    def image(row: int) -> np.ndarray:
        if row not in images:
            images[row] = resize_square(np.asarray(stored[row]), size)
        return images[row]

    inputs = np.stack([image(r) for r in pairs["input_row"]])
    frontals = np.stack([image(r) for r in pairs["frontal_row"]])
    side = stored.shape[1]
    centres = np.stack([np.stack([patch_centres(landmarks[r])[k] for k in PATCHES]) for r in pairs["input_row"]])
    labels = np.concatenate([centres.reshape(len(pairs), 8) * size / side,
                             pairs["yaw"].to_numpy(np.float32)[:, None]], 1).astype(np.float32)
    rows = pd.DataFrame({"path": frame.loc[pairs["input_row"], "path"].to_numpy(),
                         "identity": frame.loc[pairs["input_row"], "identity"].astype(str).to_numpy(),
                         "yaw": pairs["yaw"].to_numpy(),
                         "flash": frame.loc[pairs["input_row"], "flash"].astype(int).to_numpy(),
                         "frontal_path": frame.loc[pairs["frontal_row"], "path"].to_numpy()})
    return {"inputs": inputs, "frontals": frontals, "labels": labels, "rows": rows,
            "input_landmarks": (landmarks[pairs["input_row"].to_numpy()] * size / side).astype(np.float32),
            "frontal_template": (template * size / side).astype(np.float32)}


def frontal_photos(root: Path, split: str, flash: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each person's frontal (camera 051) photo under `flash` in one split: (N, size, size, 3) uint8
    and their identities (the identification gallery, or its distractors)."""
    from facegan.data.datasets import read_image_set

    stored, frame = read_image_set(Path(root) / "data" / "multipie")
    chosen = frame[(frame["split"] == split) & (frame["camera"].astype(int) == int(FRONTAL_CAMERA))
                   & (frame["flash"].astype(int) == flash)]
    if chosen.empty:
        return np.zeros((0, size, size, 3), np.uint8), np.array([], dtype=str)
    images = np.stack([resize_square(np.asarray(stored[row]), size) for row in chosen.index])
    return images, chosen["identity"].astype(str).to_numpy()


def frontal_rows(root: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every frontal (camera 051) image at `size` pixels, resized as `load_pairs` resizes TP-GAN's
    targets, and their names: what the feature cache holds for TP-GAN's identity loss."""
    from facegan.data.datasets import read_image_set

    stored, frame = read_image_set(Path(root) / "data" / "multipie")
    rows = np.flatnonzero(frame["camera"].astype(int).to_numpy() == int(FRONTAL_CAMERA))
    images = np.stack([resize_square(np.asarray(stored[row]), size) for row in rows]) if len(rows) else \
        np.zeros((0, size, size, 3), np.uint8)
    return images, frame["path"].astype(str).to_numpy()[rows]
