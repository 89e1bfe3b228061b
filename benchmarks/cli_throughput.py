"""The photo commands' throughput on a folder of real photos: the shipped batched path beside a
photo-by-photo loop (--batch 1), in one run, with the trained models of this project.

    python benchmarks/cli_throughput.py [--n 50] [--commands beautify edit emojify frontalize transfer]
Photos: the London set's neutral faces from the mirror (675 x 675). Times include detection, framing,
the method and writing the pasted-back photo; the first call (the model's load and one photo) is timed apart.
Goals (issue 26): beautify <= 1.5 s a photo on 2 cores, the others <= 0.3 s.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

from facegan import cli
from facegan.config import load_params
from facegan.paths import mirror_root, project_root

ARGUMENTS = {"beautify": ["--delta", "1"], "edit": ["--attr", "Male=1"], "emojify": [], "frontalize": [],
             "transfer": ["--ref", "{reference}"]}
METHOD = {"beautify": "beholder", "edit": "fader", "emojify": "dtn", "frontalize": "tpgan", "transfer": "geogan"}


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"facegan {' '.join(argv)} exited with {code}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="photos in the folder")
    parser.add_argument("--commands", nargs="+", default=list(ARGUMENTS), choices=list(ARGUMENTS))
    args = parser.parse_args()
    root = project_root()
    mirror = mirror_root(load_params(root / "params.yaml").data.mirror)
    photos = sorted((mirror / "london" / "neutral_front").glob("*.jpg"))[: args.n]
    reference = sorted((mirror / "london" / "smiling_front").glob("*.jpg"))[0]
    print(f"{len(photos)} London photos; {'command':>10} {'first s':>7} | {'batched s/photo':>15} {'photos/s':>8} | "
          f"{'one by one s/photo':>18} {'photos/s':>8} | speed-up")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for photo in photos:
            shutil.copy(photo, folder / photo.name)
        for command in args.commands:
            if not (root / "models" / METHOD[command] / "model.json").exists():
                print(f"{'':>14}{command:>10} skipped: run `dvc repro train@{METHOD[command]}`")
                continue
            extra = [a.format(reference=reference) for a in ARGUMENTS[command]]
            load = timed([command, str(photos[0]), "--out", f"{tmp}/warm.png", *extra])   # load + one photo
            batched = timed([command, str(folder), "--out", f"{tmp}/batched", *extra]) / len(photos)
            single = timed([command, str(folder), "--out", f"{tmp}/single", "--batch", "1", *extra]) / len(photos)
            print(f"{'':>14}{command:>10} {load:7.1f} | {batched:15.2f} {1 / batched:8.2f} | {single:18.2f} "
                  f"{1 / single:8.2f} | {single / batched:.2f}x")


if __name__ == "__main__":
    main()
