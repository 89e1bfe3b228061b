"""`facegan`: apply the pipeline to your own photos.

facegan align photo.jpg [more.jpg | folder ...] --out crops/   detect, landmark and align faces
facegan generate cgan --attr Blond_Hair=1 Male=0 -n 16 --out grid.png
                                                             faces with the attributes you ask for
facegan generate beholder -n 8 --levels 8 --out strips.png   one face per row, growing more beautiful
facegan beautify photo.jpg [more | folder] --delta 1.0 --out out.png
                                                             Beholder-GAN beautification
facegan edit photo.jpg [more | folder] --attr Male=0.2 Young=1 --out out.png
                                                             Fader Networks: slide attributes of a photo
facegan emojify photo.jpg [more | folder] --out avatar.png   DTN: the face as a cartoon avatar
facegan frontalize photo.jpg [more | folder] [--yaw -60] --out frontal.png
                                                             TP-GAN: the face seen from the front
facegan transfer photo.jpg [more | folder] --ref smiling.jpg --out out.png
                                                             GeoGAN: the reference's attribute onto the photo
facegan rate photo.jpg [more | folder] [--csv scores.csv]    Beholder-GAN's raters: each face's predicted beauty
facegan serve [--port 8000]                                  a local page: drop a photo, move sliders
facegan info                                                 what the pipeline has produced so far

Every photo command writes the photo with the result pasted back (its face warped back through the
alignment's inverse and blended in) and <out>_compare.png (photo | result); --crop writes the method's
crop instead; --all-faces processes every face found (default: the largest).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from facegan.config import AlignParams, ConfigError, load_params
from facegan.paths import project_root
from facegan.serve import EDIT_RANGE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
STRIP_VALUES = [i / 7 for i in range(8)]   # `edit --strip`: the attribute from 0 to 1 in 8 steps


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders contribute their image files (batch mode)."""
    found = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            found += [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
            if others:   # said, not silently dropped; a file named as an image but not one fails later, by name
                print(f"note: {path}: skipped {len(others)} file(s) that are not images by their extension: "
                      + ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""), file=sys.stderr)
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


def read_photo(path: Path):
    """The photo as RGB uint8, or None after printing why it cannot be read."""
    from facegan.data.images import load_rgb

    try:
        return load_rgb(path)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


@dataclass
class Face:
    """One face of a photo: `index` 0 is the largest of the `count` used from it; `item` what the
    command keeps of it (an aligned crop, or the method's Framed input)."""
    path: Path
    index: int
    count: int
    item: object


def detected_faces(paths: list[Path], detect_side: int, keep, backend: str = "dlib", all_faces: bool = False):
    """Face(path, k, n, keep(path, photo, Detection)) for each face found: every face with `all_faces`,
    else the largest (said when there were several); the photo itself is not held. Each failure
    (unreadable file, no face) is printed as one line naming the file. Returns (faces, failures)."""
    from tqdm import tqdm

    from facegan.faces.landmarks import Landmarker

    landmarker = Landmarker(backend, "cpu", detect_side)
    faces, failures = [], 0
    for path in tqdm(paths, desc="detect faces", unit="img", disable=None):
        image = read_photo(path)
        if image is None:
            failures += 1
            continue
        found = landmarker.detect_all(image, ["hog", "cnn"], largest_only=not all_faces)
        if not found:
            print(f"error: {path}: no face found", file=sys.stderr)
            failures += 1
            continue
        if found[0].n_faces > 1 and not all_faces:
            print(f"note: {path}: {found[0].n_faces} faces found, used the largest (--all-faces: every one)",
                  file=sys.stderr)
        faces += [Face(path, k, len(found), keep(path, image, detection)) for k, detection in enumerate(found)]
    return faces, failures


def aligned_faces(paths: list[Path], size: int, params: AlignParams, all_faces: bool = False):
    """Face(..., aligned crop) for each face found, and the failures."""
    from facegan.faces.align import align_face

    def crop(path, image, found):
        return align_face(image, found.landmarks, size, params.eye_distance, params.eye_y)[0]

    return detected_faces(paths, params.detect_side, crop, params.backend, all_faces)


def framed_faces(paths: list[Path], method, params: AlignParams, as_is: bool = False, all_faces: bool = False,
                 **options):
    """Face(..., Framed) for each face: framed as the method's input (`frame`), or with `as_is` the
    photo itself taken as framed; and the failures."""
    from facegan.methods.base import RequestError

    def frame(image, landmarks):
        try:
            return method.frame(image, landmarks, params, **options)
        except RequestError as err:
            raise UserError(str(err)) from None

    if not as_is:
        return detected_faces(paths, params.detect_side, lambda path, image, found: frame(image, found.landmarks),
                              params.backend, all_faces)
    faces, failures = [], 0
    for path in paths:
        image = read_photo(path)
        if image is None:
            failures += 1
            continue
        faces.append(Face(path, 0, 1, frame(image, None)))
    return faces, failures


def face_batches(faces: list[Face], batch: int, desc: str):
    """(chunk, photos, options) over the framed faces in batches: chunk the Faces, photos their crops
    as one (N, 3, H, W) tensor in [-1, 1], options each per-face option as a list; with a progress bar."""
    from tqdm import tqdm

    from facegan.methods.base import framed_batch

    chunks = [faces[i:i + batch] for i in range(0, len(faces), batch)]
    for chunk in tqdm(chunks, desc=desc, unit="batch", disable=None):
        yield chunk, *framed_batch([face.item for face in chunk])


def face_path(target: Path, face: Face) -> Path:
    """A face's own file beside the photo's: <target> for a photo's only face, else <stem>_face<k>."""
    return target if face.count == 1 else target.with_name(f"{target.stem}_face{face.index + 1}{target.suffix}")


def save_rgb(crop, target: Path) -> None:
    import cv2

    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


def cmd_align(args) -> int:
    params = align_params()
    faces, failures = aligned_faces(expand_inputs(args.photos), args.size or params.size, params, args.all_faces)
    for face in faces:
        target = face_path(args.out / f"{face.path.stem}_aligned.png", face)
        save_rgb(face.item, target)
        print(target)
    return 1 if failures else 0


def output_targets(paths: list[Path], out: Path, suffix: str):
    """One photo and an image path: write there; otherwise --out is a folder of <stem>_<suffix>.png."""
    single = len(paths) == 1 and out.suffix.lower() in IMAGE_SUFFIXES
    if not single and out.suffix:
        raise UserError(f"--out {out}: give a folder when processing several photos")
    return lambda path: out if single else out / f"{path.stem}_{suffix}.png"


def trained(name: str):
    from facegan.train.loop import load_trained

    try:
        return load_trained(name, project_root())
    except FileNotFoundError as err:
        raise UserError(str(err)) from None


def transformed(method, crops, **options):
    """method.transform, with what the user asked wrong or what is missing as one line."""
    from facegan.data.quality import DataError
    from facegan.methods.base import RequestError

    try:
        return method.transform(crops, **options)
    except (RequestError, FileNotFoundError, DataError) as err:
        raise UserError(str(err)) from None


def run_photo_command(args, method, suffix: str, options: dict, describe=None, frame_options=None,
                      as_is: bool = False, input_label: str = "photo", output_label: str = "", each_batch=None) -> int:
    """The skeleton every photo command shares: inputs -> faces framed for the method -> batches through
    `transform` -> each output pasted back into its photo (faces/paste.py) at <out> (or
    <out>/<stem>_<suffix>.png) with a _compare.png (photo | result); with --crop the output crops
    themselves and a _compare.png of input | panels | output. One line per face; exit 1 when any photo
    failed, the others still done. `each_batch(photos, targets)`: further outputs of a command from the
    same framed crops (targets: each face's crop path)."""
    import torch

    from facegan.data.datasets import to_uint8

    paths = expand_inputs(args.photos)
    target_of = output_targets(paths, args.out, suffix)
    faces, failures = framed_faces(paths, method, align_params(), as_is, args.all_faces, **(frame_options or {}))
    pasted: dict[Path, list] = {}
    for chunk, photos, per_face in face_batches(faces, args.batch, suffix):
        result = transformed(method, photos, **options, **per_face)
        if getattr(args, "residual", False):
            from facegan.methods.base import with_residual
            result = with_residual(photos, result)
        targets = [face_path(target_of(face.path), face) for face in chunk]
        pieces, _ = result.for_paste()   # a residual edit adds its change to the photo itself
        for k, (face, target) in enumerate(zip(chunk, targets)):
            note = describe(face.path, result.notes[k]) if describe else result.notes[k]
            if not args.crop:
                pasted.setdefault(face.path, []).append((face, pieces[k], note))
                continue
            save_rgb(to_uint8(result.output[k:k + 1].float())[0], target)
            strip = torch.cat([x.float().cpu() for x in (photos[k], *(p[k] for p in result.panels.values()),
                                                         result.output[k])], 2)
            save_rgb(to_uint8(strip[None])[0], target.with_name(target.stem + "_compare.png"))
            columns = " | ".join([input_label, *result.panels, output_label or suffix])
            print(f"{target}: {note} ({target.stem}_compare.png: {columns})")
        if each_batch is not None:
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
            each_batch(photos, targets)
    for path, done in pasted.items():
        paste_into_photo(path, target_of(path), done, changes=getattr(args, "residual", False))
    return 1 if failures else 0


def paste_into_photo(path: Path, target: Path, done: list, changes: bool = False) -> None:
    """The photo with each of its faces' outputs pasted back (with `changes`: each face's change added)
    -> target, and photo | result beside it."""
    from facegan.faces.paste import paste_faces, side_by_side

    photo = read_photo(path)
    result = paste_faces(photo, [output for _, output, _ in done], [face.item for face, _, _ in done], changes)
    save_rgb(result, target)
    compare = target.with_name(target.stem + "_compare.png")
    save_rgb(side_by_side(photo, result), compare)
    notes = "; ".join(note if len(done) == 1 else f"face {face.index + 1}: {note}" for face, _, note in done)
    print(f"{target}: {notes} ({compare.name}: photo | result; --crop: the {done[0][1].shape[0]}-px crops)")


def inversion_settings(args):
    """Beautification's inversion: evaluate.beholder.inversion of params.yaml (defaults without one),
    with --steps / --starts / --tune-steps / --tune-edit where given."""
    import dataclasses

    from facegan.config import InversionParams

    try:
        inversion = load_params().evaluate.beholder.inversion
    except ConfigError:
        inversion = InversionParams()
    chosen = {k: v for k, v in (("steps", args.steps), ("starts", args.starts)) if v}
    if args.tune_steps is not None:
        if args.tune_steps < 0:
            raise UserError(f"--tune-steps {args.tune_steps}: expected 0 (none, the paper) or more")
        chosen["tune_steps"] = args.tune_steps
    if args.tune_edit is not None:
        if args.tune_edit < 0:
            raise UserError(f"--tune-edit {args.tune_edit:g}: expected 0 (off) or more")
        chosen["tune_edit"] = args.tune_edit
    return dataclasses.replace(inversion, **chosen, **({"init": "random"} if args.random_init else {}))


def cmd_beautify(args) -> int:
    """Beholder-GAN beautification: recover (z, beta) of each aligned photo, regenerate at beta + delta."""
    import torch

    method = trained("beholder")
    options = {"delta": args.delta, "inversion": inversion_settings(args),
               "generator": torch.Generator().manual_seed(args.seed)}
    return run_photo_command(args, method, "beautified", options)


def cmd_rate(args) -> int:
    """Beholder-GAN's first half on its own: the K per-rater predictors (models/beauty) score each face.
    Prints the ensemble's beauty (the mean over raters) and the raters' spread; --csv adds every rater."""
    import csv
    import dataclasses

    import numpy as np

    from facegan.beauty.judge import BeautyJudge
    from facegan.beauty.stage import model_folder
    from facegan.data.datasets import to_tensor

    root = project_root()
    if not (model_folder(root) / "model.json").exists():
        raise UserError(f"{model_folder(root)}: no trained raters: run `dvc repro beauty`")
    photos = expand_inputs(args.photos)
    judge = BeautyJudge(root)
    params = dataclasses.replace(align_params(), eye_distance=judge.eye_distance, eye_y=judge.eye_y)
    faces, failures = aligned_faces(photos, params.size, params, args.all_faces)
    if not faces:
        return 1
    scores = judge.ensemble.predict(judge.describe(to_tensor(np.stack([face.item for face in faces]))))
    low, high = judge.ensemble.scale
    print(f"beauty on the raters' {low:g}-{high:g} scale: the mean of {scores.shape[1]} raters' predicted "
          "scores (their spread: the standard deviation over raters)")
    for face, row in zip(faces, scores):
        name = str(face.path) + (f" face {face.index + 1}" if face.count > 1 else "")
        print(f"{name}: {row.mean():.2f} (raters {row.std():.2f} sd, {row.min():.2f}-{row.max():.2f})")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["photo", "face", "beauty", "raters_sd", *judge.ensemble.raters])
            for face, row in zip(faces, scores):
                writer.writerow([face.path, face.index + 1, f"{row.mean():.4f}", f"{row.std():.4f}",
                                 *(f"{v:.4f}" for v in row)])
        print(f"{args.csv}: every rater's score of each face")
    return 1 if failures else 0


def parse_attributes(pairs: list[str], known: list[str], low: float = 0.0, high: float = 1.0) -> dict[str, float]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            raise UserError(f"--attr {pair!r}: expected NAME=VALUE with NAME one of {', '.join(known)}")
        try:
            values[name] = float(value)
        except ValueError:
            raise UserError(f"--attr {pair!r}: the value must be a number (0 absent, 1 present)") from None
        if not low <= values[name] <= high:
            raise UserError(f"--attr {pair!r}: the value must lie in [{low:g}, {high:g}]")
    return values


def cmd_edit(args) -> int:
    """Fader Networks: Dec(E(x), y') with y' the photo's own attributes (as the attribute
    judge sees them) except those asked for; --strip slides one attribute from 0 to 1."""
    from torchvision.utils import save_image

    method = trained("fader")
    asked = parse_attributes(args.attr, method.condition_names, EDIT_RANGE[0], EDIT_RANGE[1])
    if args.strip and args.strip not in method.condition_names:
        raise UserError(f"--strip {args.strip!r}: expected one of {', '.join(method.condition_names)}")

    def slider(photos, targets):   # the same crops with the attribute at STRIP_VALUES, the others as asked
        import torch

        from facegan.methods.base import with_residual

        def at(value):
            result = transformed(method, photos, attributes={**asked, args.strip: float(value)})
            return (with_residual(photos, result) if args.residual else result).output.float()

        slid = torch.stack([at(v) for v in STRIP_VALUES], 1)
        for strip, target in zip(slid, targets):
            strip_path = target.with_name(f"{target.stem}_strip_{args.strip}.png")
            save_image(strip.add(1).div(2).clamp(0, 1), strip_path, nrow=len(STRIP_VALUES))
            print(f"{strip_path}: {args.strip} from 0 to 1 in {len(STRIP_VALUES)} steps")

    return run_photo_command(args, method, "edited", {"attributes": asked},
                             each_batch=slider if args.strip else None)


def cmd_emojify(args) -> int:
    """DTN: G(x) = g(f(x)) for each aligned face."""
    return run_photo_command(args, trained("dtn"), "avatar", {})


def cmd_frontalize(args) -> int:
    """TP-GAN: frame each face like the Multi-PIE crops (yaw estimated from its landmarks, or
    --yaw), then synthesise the frontal view."""
    method = trained("tpgan")
    if args.yaw is not None and not -90 <= args.yaw <= 90:
        raise UserError(f"--yaw {args.yaw:g}: expected degrees in [-90, 90] (negative: the face turned to the "
                        "image's left)")
    if args.as_is and args.yaw is None:
        raise UserError("--as-is needs --yaw: without detection the yaw places the patches")
    how = "given" if args.yaw is not None else "estimated from the landmarks"
    how += ", photo used as framed" if args.as_is else ""
    return run_photo_command(args, method, "frontal", {}, describe=lambda path, note: f"{note} ({how})",
                             frame_options={"yaw": args.yaw}, as_is=args.as_is, input_label="framed input")


def cmd_transfer(args) -> int:
    """GeoGAN: a_y = G(a, b_y) for each aligned source face a and the aligned reference b_y."""
    from facegan.data.datasets import to_tensor

    method = trained("geogan")
    reference, failed = framed_faces([args.ref], method, align_params())
    if failed:
        raise UserError(f"--ref {args.ref}: no usable reference face (see above)")
    b = to_tensor(reference[0].item.crop[None])
    return run_photo_command(args, method, "transfer", {"reference": b}, output_label="output",
                             describe=lambda path, note: f"{method.attribute} of {args.ref.name} moved onto {path.name}")


def cmd_generate(args) -> int:
    import torch
    from torchvision.utils import save_image

    from facegan.methods.base import RequestError

    method = trained(args.method)
    values = parse_attributes(args.attr, method.condition_names) if method.condition_names else {}
    if args.attr and not method.condition_names:
        raise UserError(f"{args.method} generates from beauty levels, not attributes: use --levels")
    try:
        faces, per_row, caption = method.sample_sheet(args.n, values, args.levels,
                                                      torch.Generator().manual_seed(args.seed))
    except RequestError as err:
        raise UserError(str(err)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(faces.float().add(1).div(2).clamp(0, 1), args.out, nrow=per_row)
    print(f"{args.out}: {caption}")
    return 0


def cmd_info(args) -> int:
    """The data counts, then each method: trained or not (and how long), its headline figures."""
    from facegan.methods import REGISTRY
    from facegan.reports import format_value, headline

    root = project_root()
    quality = root / "reports/data_quality.json"
    if not quality.exists():
        print("nothing produced yet: run `make run` (or `dvc repro`) in", root)
        return 0
    print("data (kept/read per stage):")
    for name, counts in json.loads(quality.read_text())["sets"].items():
        stages = ", ".join(f"{stage} {c['kept']}/{c['read']}" for stage, c in counts["stages"].items())
        print(f"  {name:10s} {stages}")
    print("methods:")
    for name in REGISTRY:
        model = root / "models" / name / "model.json"
        if not model.exists():
            print(f"  {name:10s} not trained: run `dvc repro train@{name}`")
            continue
        meta = json.loads(model.read_text())
        print(f"  {name:10s} trained {meta.get('steps', '?')} steps ({meta.get('minutes_this_run', '?')} min in its "
              f"last run, stopped by {meta.get('stopped_by', '?')})")
        figures = headline(root, name, REGISTRY[name].headline_keys())
        if figures is None:
            print(f"  {'':10s} not evaluated: run `dvc repro evaluate@{name}`")
        for key, value in (figures or {}).items():
            print(f"  {'':10s} {key}: {format_value(value)}")
    page = root / "reports" / "index.html"
    print(f"report: {page}" if page.exists() else "report: not written yet: run `dvc repro report`")
    return 0


def cmd_serve(args) -> int:
    import socket

    from facegan.serve import serve

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected 1 .. 65535")
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError as err:
            raise UserError(f"--port {args.port}: cannot listen there ({err.strerror}); pick another") from None
    serve(project_root(), args.port)
    return 0


def photo_command(sub, name: str, help: str, description: str, batch: int, func):
    """A photo command's parser: the photos or folders, --out and --batch (the shared skeleton's arguments)."""
    command = sub.add_parser(name, help=help, description=description)
    command.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    command.add_argument("--out", type=Path, required=True, help="output PNG for one photo, or a folder for several")
    command.add_argument("--batch", type=int, default=batch, help="photos processed together")
    command.add_argument("--crop", action="store_true",
                         help="write the method's output crop (and input | panels | output) instead of the "
                              "result pasted back into the photo")
    add_all_faces(command)
    command.set_defaults(func=func)
    return command


def add_residual(command) -> None:
    command.add_argument("--residual", action="store_true",
                         help="keep the photo's own face and add only the change the method makes: photo + "
                              "(output - reconstruction) (ours; the paper's output is the method's whole "
                              "redrawn face)")


def add_all_faces(command) -> None:
    command.add_argument("--all-faces", action="store_true",
                         help="every face found in a photo (default: the largest); several crops are "
                              "<stem>_face<k>")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    align = sub.add_parser("align", help="detect, landmark and align faces in photos or folders")
    align.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    align.add_argument("--out", type=Path, required=True, help="folder for the aligned crops")
    align.add_argument("--size", type=int, default=0, help="crop side in pixels (default: align.size)")
    add_all_faces(align)
    align.set_defaults(func=cmd_align)
    generate = sub.add_parser("generate", help="faces from attributes with a trained conditional method")
    generate.add_argument("method", choices=["cgan", "beholder"], help="trained method")
    generate.add_argument("--attr", nargs="*", default=[], metavar="NAME=VALUE",
                          help="attribute values in [0, 1]; attributes not given are 0 (absent); beholder: "
                               "the attributes it holds (train.beholder.keep), 0 or 1 for every row")
    generate.add_argument("-n", type=int, default=16, help="number of faces (beholder: of rows)")
    generate.add_argument("--levels", type=int, default=8, help="beholder: beauty levels per row")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    generate.set_defaults(func=cmd_generate)
    beautify = photo_command(sub, "beautify", "Beholder-GAN: raise the beauty of faces in photos",
                             "Detect and align each face, recover (z, beta) by gradient descent on alpha*L2 + "
                             "(1-alpha)*FaceNet loss, regenerate at beta + delta.", 16, cmd_beautify)
    beautify.add_argument("--delta", type=float, default=1.0,
                          help="added to every rater's score, in standard deviations of that rater's "
                               "training scores (default 1.0; negative lowers beauty)")
    beautify.add_argument("--steps", type=int, default=0, help="inversion steps (default: evaluate.beholder.inversion)")
    beautify.add_argument("--starts", type=int, default=0,
                          help="starts per photo, the first E(photo) (default: evaluate.beholder.inversion)")
    beautify.add_argument("--random-init", action="store_true",
                          help="every start random, as in the paper (give --starts 4 --steps 100)")
    beautify.add_argument("--tune-steps", type=int, default=None,
                          help="pivotal-tuning steps of G per photo after the search (default: "
                               "evaluate.beholder.inversion; 0: regenerate from G itself, the paper)")
    beautify.add_argument("--tune-edit", type=float, default=None,
                          help="weight of the edit term while tuning: the tuned G keeps G's own change under "
                               "beta (default: evaluate.beholder.inversion; 0: off)")
    beautify.add_argument("--seed", type=int, default=0)
    add_residual(beautify)
    edit = photo_command(sub, "edit", "Fader Networks: slide attributes of faces in photos",
                         "Detect and align each face, encode it, decode with the attributes you set (the others "
                         "keep the values the attribute judge sees in the photo).", 64, cmd_edit)
    edit.add_argument("--attr", nargs="+", default=[], metavar="NAME=VALUE",
                      help=f"attribute values: 0 absent, 1 present, in between the slider; [{EDIT_RANGE[0]:g}, "
                           f"{EDIT_RANGE[1]:g}] allowed (beyond [0, 1] extrapolates)")
    edit.add_argument("--strip", metavar="NAME", default="",
                      help="also write <out>_strip_NAME.png: that attribute slid from 0 to 1")
    add_residual(edit)
    photo_command(sub, "emojify", "DTN: turn faces in photos into cartoon avatars that keep identity",
                  "Detect and align each face, take its FaceNet embedding f(x), draw g(f(x)) in the target domain "
                  "the model was trained on.", 32, cmd_emojify)
    frontalize = photo_command(sub, "frontalize", "TP-GAN: synthesise the frontal view of faces in photos",
                               "Detect each face, frame it like the Multi-PIE crops TP-GAN was trained on (the yaw "
                               "estimated from its landmarks unless --yaw is given), and draw the face seen from "
                               "the front.", 32, cmd_frontalize)
    frontalize.add_argument("--yaw", type=float, default=None,
                            help="the face's yaw in degrees, -90 (turned to the image's left) .. 90; beyond "
                                 "about 45 degrees the landmark estimate is unreliable, so give it")
    frontalize.add_argument("--as-is", action="store_true",
                            help="the photos are already face crops framed like Multi-PIE's (or UMIST's): skip "
                                 "detection and framing (needs --yaw)")
    transfer = photo_command(sub, "transfer", "GeoGAN: give faces in photos the attribute a reference face has",
                             "Detect and align each face and the reference, warp the reference onto the face's "
                             "geometry with the learnt flow, blend it in through the mask and refine (the attribute "
                             "the model was trained for: Smiling by default).", 32, cmd_transfer)
    transfer.add_argument("--ref", type=Path, required=True, help="a photo of a face that has the attribute")
    rate = sub.add_parser("rate", help="Beholder-GAN's per-rater predictors: the predicted beauty of faces in photos",
                          description="Detect and align each face and score it with the K per-rater predictors "
                                      "of stage `beauty` (the raters Beholder-GAN is conditioned on): their mean, "
                                      "their spread, and with --csv every rater's score.")
    rate.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    rate.add_argument("--csv", type=Path, default=None, help="write every rater's score of each face here")
    add_all_faces(rate)
    rate.set_defaults(func=cmd_rate)
    serve = sub.add_parser("serve", help="a local web page: drop a photo, pick a method, move its sliders",
                           description="Serve a page on 127.0.0.1 where you drop a photo, pick a trained method, "
                                       "move its sliders and see the result pasted back into the photo.")
    serve.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    serve.set_defaults(func=cmd_serve)
    info = sub.add_parser("info", help="what the pipeline has produced: data counts, trained models and their "
                                       "headline figures")
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
