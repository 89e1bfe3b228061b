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
facegan info                                                 what the pipeline has produced so far
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facegan.config import AlignParams, ConfigError, load_params
from facegan.paths import project_root

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
EDIT_RANGE = (-1.0, 2.0)   # Fader slider values: [0, 1] interpolates, beyond extrapolates (the paper's figures)


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


def detected_faces(paths: list[Path], detect_side: int, keep, backend: str = "dlib"):
    """keep(path, photo, Detection) for each photo in which a face is found (the largest, said
    when there were several; the photo itself is not held); each failure (unreadable file, no
    face) is printed as one line naming the file. Returns (list, failures)."""
    from tqdm import tqdm

    from facegan.faces.landmarks import Landmarker

    landmarker = Landmarker(backend, "cpu", detect_side)
    faces, failures = [], 0
    for path in tqdm(paths, desc="detect faces", unit="img", disable=None):
        image = read_photo(path)
        if image is None:
            failures += 1
            continue
        found = landmarker.detect(image, ["hog", "cnn"])
        if found is None:
            print(f"error: {path}: no face found", file=sys.stderr)
            failures += 1
            continue
        if found.n_faces > 1:
            print(f"note: {path}: {found.n_faces} faces found, used the largest", file=sys.stderr)
        faces.append(keep(path, image, found))
    return faces, failures


def aligned_faces(paths: list[Path], size: int, params: AlignParams):
    """(path, aligned crop) for each photo in which a face is found, and the failures."""
    from facegan.faces.align import align_face

    def crop(path, image, found):
        return path, align_face(image, found.landmarks, size, params.eye_distance, params.eye_y)[0]

    return detected_faces(paths, params.detect_side, crop, params.backend)


def face_batches(faces: list, batch: int, desc: str):
    """(chunk, photos) over the aligned faces in batches: chunk the (path, crop) pairs, photos
    their crops as one (N, 3, H, W) tensor in [-1, 1]; with a progress bar."""
    import numpy as np
    from tqdm import tqdm

    from facegan.data.datasets import to_tensor

    chunks = [faces[i:i + batch] for i in range(0, len(faces), batch)]
    for chunk in tqdm(chunks, desc=desc, unit="batch", disable=None):
        yield chunk, to_tensor(np.stack([crop for _, crop in chunk]))


def save_rgb(crop, target: Path) -> None:
    import cv2

    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


def cmd_align(args) -> int:
    params = align_params()
    faces, failures = aligned_faces(expand_inputs(args.photos), args.size or params.size, params)
    for path, crop in faces:
        target = args.out / f"{path.stem}_aligned.png"
        save_rgb(crop, target)
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


def cmd_beautify(args) -> int:
    """Beholder-GAN beautification: recover (z, beta) of each aligned photo, regenerate at beta + delta."""
    import torch

    from facegan.beauty.stage import BeautyJudge
    from facegan.data.datasets import to_uint8

    method = trained("beholder")
    size = method.image_size
    paths = expand_inputs(args.photos)
    target_of = output_targets(paths, args.out, "beautified")
    try:
        judge = BeautyJudge(project_root())
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    faces, failures = aligned_faces(paths, size, align_params())
    generator = torch.Generator().manual_seed(args.seed)
    for chunk, photos in face_batches(faces, args.batch, "beautify"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=judge.bf16):
            recovered = method.invert(photos, judge.facenet, generator, steps=args.steps, starts=args.starts)
        beautified = method.regenerate(recovered["z"], recovered["beta"], args.delta).float()
        reconstruction = method.generate(recovered["beta"], recovered["z"]).float()
        before, recon, after = judge.beauty(photos), judge.beauty(reconstruction), judge.beauty(beautified)
        for k, (path, _) in enumerate(chunk):
            target = target_of(path)
            save_rgb(to_uint8(beautified[k:k + 1])[0], target)
            strip = torch.cat([photos[k], reconstruction[k], beautified[k]], 2)
            save_rgb(to_uint8(strip[None])[0], target.with_name(target.stem + "_compare.png"))
            print(f"{target}: predicted beauty: photo {before[k]:.2f}, reconstruction {recon[k]:.2f}, beautified "
                  f"{after[k]:.2f} (every rater {args.delta:+g} sd; {target.stem}_compare.png: photo | "
                  "reconstruction | beautified)")
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
    judge sees them) except those asked for."""
    import torch
    from torchvision.utils import save_image

    from facegan.data.datasets import to_uint8
    from facegan.metrics import attributes as judge_module
    from facegan.methods.fader import EVAL_SLIDER

    method = trained("fader")
    asked = parse_attributes(args.attr, method.attributes, EDIT_RANGE[0], EDIT_RANGE[1])
    if args.strip and args.strip not in method.attributes:
        raise UserError(f"--strip {args.strip!r}: expected one of {', '.join(method.attributes)}")
    try:   # attributes the user does not set keep the values the judge sees in the photo
        judge = judge_module.load(project_root() / "models" / "attr_classifier")
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    paths = expand_inputs(args.photos)
    target_of = output_targets(paths, args.out, "edited")
    faces, failures = aligned_faces(paths, method.image_size, align_params())
    for chunk, photos in face_batches(faces, args.batch, "edit"):
        seen = judge.predict(photos)
        own = torch.tensor([[float(seen[k, judge.column(name)] >= 0.5) for name in method.attributes]
                            for k in range(len(chunk))])
        wanted = own.clone()
        for name, value in asked.items():
            wanted[:, method.attributes.index(name)] = value
        latent = method.encode(photos)
        edited, reconstruction = method.decode(latent, wanted).float(), method.decode(latent, own).float()
        for k, (path, _) in enumerate(chunk):
            target = target_of(path)
            save_rgb(to_uint8(edited[k:k + 1])[0], target)
            strip = torch.cat([photos[k], reconstruction[k], edited[k]], 2)
            save_rgb(to_uint8(strip[None])[0], target.with_name(target.stem + "_compare.png"))
            judged = ", ".join(f"{n}={int(v)}" for n, v in zip(method.attributes, own[k].tolist()))
            change = ", ".join(f"{n}={v:g}" for n, v in asked.items()) or "nothing (reconstruction)"
            print(f"{target}: judged {judged}; set {change} ({target.stem}_compare.png: photo | reconstruction | "
                  "edited)")
            if args.strip:
                column = method.attributes.index(args.strip)
                slid = method.sliders(photos[k], wanted[k:k + 1], column, EVAL_SLIDER).float()
                strip_path = target.with_name(f"{target.stem}_strip_{args.strip}.png")
                save_image(slid.add(1).div(2).clamp(0, 1), strip_path, nrow=len(EVAL_SLIDER))
                print(f"{strip_path}: {args.strip} from 0 to 1 in {len(EVAL_SLIDER)} steps")
    return 1 if failures else 0


def cmd_emojify(args) -> int:
    """DTN: G(x) = g(f(x)) for each aligned face."""
    import torch

    from facegan.data.datasets import to_uint8
    from facegan.methods.dtn import autocast_like_training, cosine

    method = trained("dtn")
    paths = expand_inputs(args.photos)
    target_of = output_targets(paths, args.out, "avatar")
    faces, failures = aligned_faces(paths, method.image_size, align_params())
    for chunk, photos in face_batches(faces, args.batch, "emojify"):
        with autocast_like_training("cpu"):
            f_s = method.embed(photos)
            avatars = method.g(f_s).float()
            kept = cosine(f_s.numpy(), method.embed(avatars).numpy())
        for k, (path, _) in enumerate(chunk):
            target = target_of(path)
            save_rgb(to_uint8(avatars[k:k + 1])[0], target)
            pair = torch.cat([photos[k], avatars[k]], 2)
            save_rgb(to_uint8(pair[None])[0], target.with_name(target.stem + "_compare.png"))
            print(f"{target}: {method.params.target} avatar; f-constancy cos(f(photo), f(avatar)) = {kept[k]:.3f} "
                  f"({target.stem}_compare.png: photo | avatar)")
    return 1 if failures else 0


def as_is_crops(paths: list[Path], method, yaw: float | None):
    """Photos already framed like the training crops (Multi-PIE's, UMIST's): padded square and
    resized, the patch centres the yaw model's at the given yaw (no detection)."""
    from facegan.data.multipie import pad_to_square, resize_square

    if yaw is None:
        raise UserError("--as-is needs --yaw: without detection the yaw places the patches")
    faces, failures = [], 0
    for path in paths:
        image = read_photo(path)
        if image is None:
            failures += 1
            continue
        faces.append((path, resize_square(pad_to_square(image), method.size), method.centres_at(yaw), float(yaw)))
    return faces, failures


def cmd_frontalize(args) -> int:
    """TP-GAN: frame each face like the Multi-PIE crops (yaw estimated from its landmarks, or
    --yaw), then synthesise the frontal view."""
    import torch
    from tqdm import tqdm

    from facegan.data.datasets import to_tensor, to_uint8

    method = trained("tpgan")
    if args.yaw is not None and not -90 <= args.yaw <= 90:
        raise UserError(f"--yaw {args.yaw:g}: expected degrees in [-90, 90] (negative: the face turned to the "
                        "image's left)")
    paths = expand_inputs(args.photos)
    target_of = output_targets(paths, args.out, "frontal")
    if args.as_is:
        faces, failures = as_is_crops(paths, method, args.yaw)
    else:
        faces, failures = detected_faces(paths, align_params().detect_side, lambda path, image, found: (
            path, *method.frame(image, found.landmarks, args.yaw)))
    for path, crop, centres, yaw in tqdm(faces, desc="frontalize", unit="face", disable=None):
        photo = to_tensor(crop[None])
        frontal = method.frontalize(photo, torch.from_numpy(centres[None]))
        target = target_of(path)
        save_rgb(to_uint8(frontal)[0], target)
        save_rgb(to_uint8(torch.cat([photo, frontal], 3))[0], target.with_name(target.stem + "_compare.png"))
        how = "given" if args.yaw is not None else "estimated from the landmarks"
        how += ", photo used as framed" if args.as_is else ""
        print(f"{target}: yaw {yaw:+.0f} degrees ({how}); {target.stem}_compare.png: framed input | frontal")
    return 1 if failures else 0


def cmd_transfer(args) -> int:
    """GeoGAN: a_y = G(a, b_y) for each aligned source face a and the aligned reference b_y."""
    import torch
    from tqdm import tqdm

    from facegan.data.datasets import to_tensor, to_uint8

    method = trained("geogan")
    reference, failed = aligned_faces([args.ref], method.image_size, align_params())
    if failed:
        raise UserError(f"--ref {args.ref}: no usable reference face (see above)")
    paths = expand_inputs(args.photos)
    target_of = output_targets(paths, args.out, "transfer")
    faces, failures = aligned_faces(paths, method.image_size, align_params())
    b = to_tensor(reference[0][1][None])
    for path, crop in tqdm(faces, desc="transfer", unit="face", disable=None):
        a = to_tensor(crop[None])
        parts = method.transfer(a, b)
        target = target_of(path)
        save_rgb(to_uint8(parts["output"])[0], target)
        strip = torch.cat([a, b, parts["warped"], parts["mask"].expand(-1, 3, -1, -1) * 2 - 1, parts["output"]], 3)
        save_rgb(to_uint8(strip)[0], target.with_name(target.stem + "_compare.png"))
        print(f"{target}: {method.params.attribute} of {args.ref.name} moved onto {path.name} ({target.stem}"
              "_compare.png: photo | reference | warped reference | mask | output)")
    return 1 if failures else 0


def cmd_generate(args) -> int:
    import torch
    from torchvision.utils import save_image

    method = trained(args.method)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(method, "strips"):   # beholder: rows of one z each, beauty rising along the row
        if args.attr:
            raise UserError(f"{args.method} generates from beauty levels, not attributes: use --levels")
        z = torch.randn(args.n, method.params.z_dim, generator=torch.Generator().manual_seed(args.seed))
        faces = method.strips(z, args.levels).float()
        save_image(faces.add(1).div(2).clamp(0, 1), args.out, nrow=args.levels)
        print(f"{args.out}: {args.n} faces (rows), each at {args.levels} beauty levels from the 5th to the 95th "
              "percentile (left to right)")
        return 0
    values = parse_attributes(args.attr, method.attributes)
    labels = torch.tensor([[values.get(name, 0.0) for name in method.attributes]] * args.n)
    faces = method.generate(labels, generator=torch.Generator().manual_seed(args.seed)).float()
    save_image(faces.add(1).div(2).clamp(0, 1), args.out, nrow=max(1, int(round(args.n ** 0.5))))
    asked = ", ".join(f"{k}={v:g}" for k, v in values.items()) or "no attribute"
    print(f"{args.out}: {args.n} faces with {asked} (others 0)")
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
        figures = headline(root, name)
        if figures is None:
            print(f"  {'':10s} not evaluated: run `dvc repro evaluate@{name}`")
        for key, value in (figures or {}).items():
            print(f"  {'':10s} {key}: {format_value(value)}")
    page = root / "reports" / "index.html"
    print(f"report: {page}" if page.exists() else "report: not written yet: run `dvc repro report`")
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
    generate.add_argument("method", choices=["cgan", "beholder"], help="trained method")
    generate.add_argument("--attr", nargs="*", default=[], metavar="NAME=VALUE",
                          help="attribute values in [0, 1]; attributes not given are 0 (absent)")
    generate.add_argument("-n", type=int, default=16, help="number of faces (beholder: of rows)")
    generate.add_argument("--levels", type=int, default=8, help="beholder: beauty levels per row")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    generate.set_defaults(func=cmd_generate)
    beautify = sub.add_parser("beautify", help="Beholder-GAN: raise the beauty of faces in photos",
                              description="Detect and align each face, recover (z, beta) by gradient descent "
                                          "on alpha*L2 + (1-alpha)*FaceNet loss, regenerate at beta + delta.")
    beautify.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    beautify.add_argument("--delta", type=float, default=1.0,
                          help="added to every rater's score, in standard deviations of that rater's "
                               "training scores (default 1.0; negative lowers beauty)")
    beautify.add_argument("--out", type=Path, required=True,
                          help="output PNG for one photo, or a folder for several")
    beautify.add_argument("--steps", type=int, default=0, help="inversion steps (default: train.beholder)")
    beautify.add_argument("--starts", type=int, default=0, help="random starts per photo (default: train.beholder)")
    beautify.add_argument("--batch", type=int, default=16, help="photos inverted together")
    beautify.add_argument("--seed", type=int, default=0)
    beautify.set_defaults(func=cmd_beautify)
    edit = sub.add_parser("edit", help="Fader Networks: slide attributes of faces in photos",
                          description="Detect and align each face, encode it, decode with the attributes you set "
                                      "(the others keep the values the attribute judge sees in the photo).")
    edit.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    edit.add_argument("--attr", nargs="+", default=[], metavar="NAME=VALUE",
                      help=f"attribute values: 0 absent, 1 present, in between the slider; [{EDIT_RANGE[0]:g}, "
                           f"{EDIT_RANGE[1]:g}] allowed (beyond [0, 1] extrapolates)")
    edit.add_argument("--out", type=Path, required=True, help="output PNG for one photo, or a folder for several")
    edit.add_argument("--strip", metavar="NAME", default="",
                      help="also write <out>_strip_NAME.png: that attribute slid from 0 to 1")
    edit.add_argument("--batch", type=int, default=64, help="photos edited together")
    edit.set_defaults(func=cmd_edit)
    emojify = sub.add_parser("emojify", help="DTN: turn faces in photos into cartoon avatars that keep identity",
                             description="Detect and align each face, take its FaceNet embedding f(x), draw "
                                         "g(f(x)) in the target domain the model was trained on.")
    emojify.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    emojify.add_argument("--out", type=Path, required=True, help="output PNG for one photo, or a folder for several")
    emojify.add_argument("--batch", type=int, default=32, help="photos converted together")
    emojify.set_defaults(func=cmd_emojify)
    frontalize = sub.add_parser("frontalize", help="TP-GAN: synthesise the frontal view of faces in photos",
                                description="Detect each face, frame it like the Multi-PIE crops TP-GAN was "
                                            "trained on (the yaw estimated from its landmarks unless --yaw is "
                                            "given), and draw the face seen from the front.")
    frontalize.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    frontalize.add_argument("--out", type=Path, required=True,
                            help="output PNG for one photo, or a folder for several")
    frontalize.add_argument("--yaw", type=float, default=None,
                            help="the face's yaw in degrees, -90 (turned to the image's left) .. 90; beyond "
                                 "about 45 degrees the landmark estimate is unreliable, so give it")
    frontalize.add_argument("--as-is", action="store_true",
                            help="the photos are already face crops framed like Multi-PIE's (or UMIST's): skip "
                                 "detection and framing (needs --yaw)")
    frontalize.set_defaults(func=cmd_frontalize)
    transfer = sub.add_parser("transfer", help="GeoGAN: give faces in photos the attribute a reference face has",
                              description="Detect and align each face and the reference, warp the reference onto "
                                          "the face's geometry with the learnt flow, blend it in through the mask "
                                          "and refine (the attribute the model was trained for: Smiling by default).")
    transfer.add_argument("photos", nargs="+", type=Path, help="image files or folders of images")
    transfer.add_argument("--ref", type=Path, required=True, help="a photo of a face that has the attribute")
    transfer.add_argument("--out", type=Path, required=True, help="output PNG for one photo, or a folder for several")
    transfer.set_defaults(func=cmd_transfer)
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
