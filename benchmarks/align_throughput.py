"""Alignment throughput: the align stage's process pool vs a sequential loop,
on the same CelebA images, in the same run. Prints img/s of each and the ratio.

    python benchmarks/align_throughput.py [--n 500] [--workers 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from facegan.config import load_params
from facegan.faces.stage import AlignTask, _init_worker, run_tasks
from facegan.paths import mirror_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    params = load_params()
    folder = mirror_root(params.data.mirror) / params.ingest.celeba.folder / "img_align_celeba"
    images = sorted(folder.glob("*.jpg"))[: args.n]
    if not images:
        raise SystemExit(f"no CelebA images in {folder}")
    # Warm-up outside the clock: files into the page cache, dlib models into this
    # process (forked workers inherit them), so both sides time alignment alone.
    for path in images:
        path.read_bytes()
    _init_worker(params.align.backend, "cpu", params.align.detect_side, params.align.size,
                 params.align.eye_distance, params.align.eye_y)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [AlignTask(i, str(p), f"{tmp}/{p.stem}.png", "landmarks", ("hog",)) for i, p in enumerate(images)]
        for label, workers in (("sequential", 1), (f"pool x{args.workers}", args.workers)):
            settings = dataclasses.replace(params.align, workers=workers)
            start = time.perf_counter()
            results = run_tasks(tasks, settings, "cpu", label)
            rates[label] = len(results) / (time.perf_counter() - start)
            print(f"{label:12s} {rates[label]:7.1f} img/s ({len(images)} images)")
    sequential, pooled = rates.values()
    print(f"ratio pool/sequential: {pooled / sequential:.2f}x on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
