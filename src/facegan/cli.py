"""`facegan`: apply the pipeline to your own photos.

facegan align photo.jpg [more.jpg | folder ...] --out crops/   detect, landmark and align faces
facegan generate cgan --attr Blond_Hair=1 Male=0 -n 16 --out grid.png
                                                             faces with the attributes you ask for
facegan info                                                 what the pipeline has produced so far
More method subcommands (beautify, edit, emojify, ...) join as their methods land.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facegan.config import AlignParams, ConfigError, load_params
from facegan.paths import project_root

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders contribute their image files (batch mode)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    if not found:
        raise UserError("no images found in " + ", ".join(map(str, paths)))
    return found


def align_params() -> AlignParams:
    try:
        return load_params().align
    except ConfigError:
        return AlignParams()


def cmd_align(args) -> int:
    import cv2
    from tqdm import tqdm

    from facegan.data.images import load_rgb
    from facegan.faces.align import align_face
    from facegan.faces.landmarks import Landmarker

    params = align_params()
    size = args.size or params.size
    landmarker = Landmarker(params.backend, "cpu", params.detect_side)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in tqdm(expand_inputs(args.photos), desc="align", unit="img", disable=None):
        try:
            image = load_rgb(path)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
            continue
        found = landmarker.detect(image, ["hog", "cnn"])
        if found is None:
            print(f"error: {path}: no face found", file=sys.stderr)
            failures += 1
            continue
        if found.n_faces > 1:
            print(f"note: {path}: {found.n_faces} faces found, aligned the largest", file=sys.stderr)
        crop, _, _ = align_face(image, found.landmarks, size, params.eye_distance, params.eye_y)
        target = args.out / f"{path.stem}_aligned.png"
        cv2.imwrite(str(target), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        print(target)
    return 1 if failures else 0


def parse_attributes(pairs: list[str], known: list[str]) -> dict[str, float]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            raise UserError(f"--attr {pair!r}: expected NAME=VALUE with NAME one of {', '.join(known)}")
        try:
            values[name] = float(value)
        except ValueError:
            raise UserError(f"--attr {pair!r}: the value must be a number (0 absent, 1 present)") from None
        if not 0 <= values[name] <= 1:
            raise UserError(f"--attr {pair!r}: the value must lie in [0, 1]")
    return values


def cmd_generate(args) -> int:
    import torch
    from torchvision.utils import save_image

    from facegan.train.loop import load_trained

    try:
        method = load_trained(args.method, project_root())
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    if not hasattr(method, "attributes"):
        raise UserError(f"{args.method} does not generate from attributes")
    values = parse_attributes(args.attr, method.attributes)
    labels = torch.tensor([[values.get(name, 0.0) for name in method.attributes]] * args.n)
    faces = method.generate(labels, generator=torch.Generator().manual_seed(args.seed)).float()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(faces.add(1).div(2).clamp(0, 1), args.out, nrow=max(1, int(round(args.n ** 0.5))))
    asked = ", ".join(f"{k}={v:g}" for k, v in values.items()) or "no attribute"
    print(f"{args.out}: {args.n} faces with {asked} (others 0)")
    return 0


def cmd_info(args) -> int:
    root = project_root()
    quality = root / "reports/data_quality.json"
    if not quality.exists():
        print("nothing produced yet: run `make run` (or `dvc repro`) in", root)
        return 0
    for name, counts in json.loads(quality.read_text())["sets"].items():
        stages = ", ".join(f"{stage} {c['kept']}/{c['read']}" for stage, c in counts["stages"].items())
        print(f"{name:10s} {stages}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    align = sub.add_parser("align", help="detect, landmark and align faces in photos or folders")
    align.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    align.add_argument("--out", type=Path, required=True, help="folder for the aligned crops")
    align.add_argument("--size", type=int, default=0, help="crop side in pixels (default: align.size)")
    align.set_defaults(func=cmd_align)
    generate = sub.add_parser("generate", help="faces from attributes with a trained conditional method")
    generate.add_argument("method", choices=["cgan"], help="trained method")
    generate.add_argument("--attr", nargs="*", default=[], metavar="NAME=VALUE",
                          help="attribute values in [0, 1]; attributes not given are 0 (absent)")
    generate.add_argument("-n", type=int, default=16, help="number of faces")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    generate.set_defaults(func=cmd_generate)
    info = sub.add_parser("info", help="what the pipeline has produced (data counts; models as they land)")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
