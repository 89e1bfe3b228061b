"""Stage `align`: detect, place 68 landmarks, crop every face to one template.

Work is spread over a process pool (`align.workers`); each worker loads the
dlib models once and returns its crops; each set is stored as one array
(data/datasets.py: manifest.csv + images.npy + contact_sheet.png). Per set, `align.<set>.detectors` are tried in order; faces
found by none are skipped and counted (mode `landmarks`) or kept as the
release's own crop without landmarks (mode `dataset_crop`).
"""
from __future__ import annotations

import logging
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from facegan.config import AlignParams, AlignSetParams
from facegan.data.images import load_rgb
from facegan.data.datasets import write_image_set
from facegan.data.manifest import read_manifest
from facegan.data.quality import SetQuality, write_part
from facegan.devices import resolve_device
from facegan.faces.align import align_face, dataset_crop, transform_points
from facegan.faces.landmarks import Landmarker

log = logging.getLogger(__name__)
REAL_DETECTORS = ("hog", "cnn")
NAN_SHAPE = np.full((68, 2), np.nan, np.float32)


@dataclass(frozen=True)
class AlignTask:
    index: int
    source: str
    mode: str
    detectors: tuple[str, ...]
    box_fraction: tuple[float, float, float, float] | None = None  # median_box rule


_worker: dict = {}


def _init_pool_worker(*args) -> None:
    """One thread per worker process: the pool is the parallelism."""
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _init_worker(*args)


def _init_worker(backend: str, device: str, detect_side: int, size: int, eye_distance: float, eye_y: float) -> None:
    _worker.update(landmarker=Landmarker(backend, device, detect_side), size=size,
                   eye_distance=eye_distance, eye_y=eye_y)


def _align_one(task: AlignTask) -> dict:
    landmarker: Landmarker = _worker["landmarker"]
    size = _worker["size"]
    result = {"index": task.index, "status": "ok", "detector": "none", "n_faces": 0,
              "source": NAN_SHAPE, "aligned": NAN_SHAPE}
    try:
        image = load_rgb(Path(task.source))
    except ValueError as err:
        return {**result, "status": "unreadable", "detail": str(err)}
    result["shape"] = image.shape[:2]
    if task.box_fraction is not None:
        h, w = image.shape[:2]
        box = np.array(task.box_fraction) * np.array([w, h, w, h])
        points, detector, n_faces = landmarker.landmarks_in_box(image, box), "median_box", 0
    else:
        found = landmarker.detect(image, list(task.detectors)) if task.detectors else None
        points, detector, n_faces = (found.landmarks, found.detector, found.n_faces) if found else (None, "none", 0)
    if task.mode == "landmarks":
        if points is None:
            return {**result, "status": "no_face_found"}
        crop, aligned, _ = align_face(image, points, size, _worker["eye_distance"], _worker["eye_y"])
    else:
        crop, matrix = dataset_crop(image, size)
        aligned = transform_points(points, matrix) if points is not None else NAN_SHAPE
    return {**result, "detector": detector, "n_faces": n_faces, "crop": crop,
            "source": points if points is not None else NAN_SHAPE, "aligned": aligned}


def run_tasks(tasks: list[AlignTask], params: AlignParams, device: str, label: str) -> list[dict]:
    """Align tasks in a pool of `params.workers` processes (in-process for 1)."""
    init = (params.backend, device, params.detect_side, params.size, params.eye_distance, params.eye_y)
    if params.workers == 1 or len(tasks) < 2:
        _init_worker(*init)
        return [_align_one(t) for t in tqdm(tasks, desc=label, unit="img", mininterval=2)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(params.workers, mp_context=context, initializer=_init_pool_worker,
                             initargs=init) as pool:
        chunk = max(1, min(64, len(tasks) // (params.workers * 8)))
        return list(tqdm(pool.map(_align_one, tasks, chunksize=chunk), total=len(tasks), desc=label,
                         unit="img", mininterval=2))


def median_box_fraction(results: list[dict]) -> tuple | None:
    """Median landmark extent of this set's detected faces, as fractions of the image size."""
    boxes = []
    for r in results:
        if r["detector"] in REAL_DETECTORS:
            h, w = r["shape"]
            points = r["source"]
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            boxes.append((x0 / w, y0 / h, x1 / w, y1 / h))
    return tuple(float(v) for v in np.median(boxes, axis=0)) if boxes else None


def align_set(name: str, raw_dir: Path, out_dir: Path, params: AlignParams, settings: AlignSetParams,
              device: str) -> SetQuality:
    quality = SetQuality(name)
    frame = read_manifest(raw_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    detectors = tuple(d for d in settings.detectors if d in REAL_DETECTORS)
    tasks = [AlignTask(i, str(raw_dir / row.path), settings.mode, detectors) for i, row in enumerate(frame.itertuples())]
    detected = tasks
    if "median_box" in settings.detectors and 0 < settings.box_sample < len(tasks):
        sample = np.random.default_rng(0).choice(len(tasks), settings.box_sample, replace=False)
        detected = [tasks[i] for i in sorted(sample)]
    results = {r["index"]: r for r in run_tasks(detected, params, device, f"align {name}")}
    undetected = [t for t in tasks if t.index not in results]

    missed = [t for t in detected if results[t.index]["status"] == "no_face_found"] + undetected
    if missed and "median_box" in settings.detectors:
        # The box is in the shape predictor's convention (landmark extent), so derive it from landmarks.
        fraction = median_box_fraction(list(results.values()))
        if fraction is not None:
            pad = _landmark_to_detector_box(fraction)
            retry = [AlignTask(t.index, t.source, t.mode, (), pad) for t in missed]
            results.update({r["index"]: r for r in run_tasks(retry, params, device, f"align {name} (median box)")})
    if any(t.index not in results for t in undetected):   # the sample found no face to place a box: detect all
        log.warning("align %s: no face found in the box sample of %d; running the detectors on every image",
                    name, len(detected))
        results.update({r["index"]: r for r in run_tasks(undetected, params, device, f"align {name}")})
        detected = tasks

    keep, aligned, source = [], [], []
    for task in tasks:
        result = results[task.index]
        quality.read += 1
        item = frame.iloc[task.index]["path"]
        if result["status"] != "ok":
            quality.skip(item, result["status"], result.get("detail", ""))
            continue
        quality.kept += 1
        quality.note(f"found_by_{result['detector']}")
        if result["n_faces"] > 1:
            quality.note("several_faces_largest_kept")
        keep.append(task.index)
        aligned.append(result["aligned"])
        source.append(result["source"])
    found = sum(results[t.index]["detector"] in REAL_DETECTORS for t in detected)
    quality.rates["face_found_rate"] = found / max(1, len(detected))   # over the images the detectors ran on
    quality.rates["landmarks_rate"] = sum(results[t.index]["detector"] != "none" for t in tasks) / max(1, len(tasks))

    kept = frame.iloc[keep].copy()
    kept["raw_path"] = kept["path"]
    kept["path"] = [Path(p).stem for p in kept["raw_path"]]   # the image's name in the set (images.npy row)
    if kept["path"].duplicated().any():
        raise ValueError(f"{raw_dir}: two images share the name {kept['path'][kept['path'].duplicated()].iloc[0]!r} "
                         "(same file name, other extension or folder); rename one")
    kept["detector"] = [results[i]["detector"] for i in keep]
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(kept):
        write_image_set(out_dir, kept, np.stack([results[i]["crop"] for i in keep]))
    np.savez_compressed(out_dir / "landmarks.npz", aligned=np.array(aligned, np.float32).reshape(-1, 68, 2),
                        source=np.array(source, np.float32).reshape(-1, 68, 2), path=kept["path"].to_numpy(str))
    quality.write_skipped(out_dir / "skipped.csv")
    return quality


def _landmark_to_detector_box(fraction: tuple) -> tuple:
    """dlib boxes are about the landmark extent; widen slightly so the predictor starts where it was trained."""
    x0, y0, x1, y1 = fraction
    w, h = x1 - x0, y1 - y0
    return (x0 - 0.05 * w, y0 - 0.05 * h, x1 + 0.05 * w, y1 + 0.05 * h)


def run_align(params: AlignParams, raw_root: Path, out_root: Path, quality_path: Path) -> dict:
    device = resolve_device(params.device)
    qualities = {}
    for name in params.sets:
        raw_dir = raw_root / name
        if not (raw_dir / "manifest.csv").exists():
            raise FileNotFoundError(f"align: {raw_dir / 'manifest.csv'} not found; add '{name}' to "
                                    f"ingest.sets and run `dvc repro ingest`")
        qualities[name] = align_set(name, raw_dir, out_root / name, params, getattr(params, name), device)
        log.info("align %s: kept %d of %d, found rate %.3f", name, qualities[name].kept, qualities[name].read,
                 qualities[name].rates["face_found_rate"])
    report = write_part(quality_path, "align", qualities)
    for quality in qualities.values():
        quality.require(params.min_found_fraction, "align.min_found_fraction")
    return report
