"""`facegan serve`: a local page where a person drops a photo, picks a method, moves its sliders and sees
the result pasted back into the photo (faces/paste.py); the trained models are loaded once, on first use.

A small Starlette app (Starlette and uvicorn come with MLflow) on 127.0.0.1. The page posts JSON: the
photo (and GeoGAN's reference) as data URLs and the method's settings; it gets the result as a PNG data URL,
or a message. A bad upload (not an image, no face, too large) or setting is answered with that message
and status 400/413, never a 500: anything else that fails is caught and said too."""
from __future__ import annotations

import base64
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EDIT_RANGE = (-1.0, 2.0)   # Fader slider values: [0, 1] interpolates, beyond extrapolates (the paper's figures)
MAX_UPLOAD_BYTES = 12 * 1024 * 1024     # per image, as uploaded
MAX_PIXELS = 40_000_000                  # a 40-megapixel photo at most (decoded)
PHOTO_METHODS = ("fader", "beholder", "tpgan", "geogan", "dtn")


class BadRequest(Exception):
    """What the user sent cannot be used; the message is shown on the page."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_data_url(text, what: str) -> np.ndarray:
    """An uploaded image (a data URL or bare base64) -> H x W x 3 uint8, or BadRequest naming the problem."""
    from facegan.data.images import decode

    if not isinstance(text, str) or not text:
        raise BadRequest(f"no {what} was uploaded")
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    if len(payload) * 3 // 4 > MAX_UPLOAD_BYTES:
        raise BadRequest(f"the {what} is larger than {MAX_UPLOAD_BYTES // 2**20} MB", 413)
    try:
        raw = base64.b64decode(payload, validate=False)
    except ValueError:
        raise BadRequest(f"the {what} could not be read (not base64 data)") from None
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS   # PIL refuses beyond 2x this (a decompression bomb) before decoding
    try:
        image, reason = decode(io.BytesIO(raw))
    except Image.DecompressionBombError:
        image, reason = None, "too_large"
    if image is None:
        raise BadRequest(f"the {what} is not an image we can read ({reason.replace('_', ' ')})")
    if image.width * image.height > MAX_PIXELS:
        raise BadRequest(f"the {what} has {image.width} x {image.height} pixels; the limit is "
                         f"{MAX_PIXELS // 1_000_000} megapixels", 413)
    return np.asarray(image.convert("RGB"))


def encode_png(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Models:
    """The project's trained methods, each loaded once, on first use; one request at a time uses them."""
    root: Path

    def __post_init__(self):
        from facegan.config import AlignParams, ConfigError, load_params
        from facegan.faces.landmarks import Landmarker

        try:
            self.align = load_params(self.root / "params.yaml").align
        except (ConfigError, FileNotFoundError):
            self.align = AlignParams()
        self.landmarker = Landmarker(self.align.backend, "cpu", self.align.detect_side)
        self.loaded, self.lock = {}, threading.Lock()

    def status(self) -> dict:
        """Per method: trained or not (and the stage that trains it), and the controls the page shows."""
        from facegan.methods.base import RESIDUAL_METHODS

        out = {}
        for name in PHOTO_METHODS:
            trained = (self.root / "models" / name / "model.json").exists()
            entry = {"trained": trained, "stage": f"dvc repro train@{name}", "residual": name in RESIDUAL_METHODS}
            if name == "fader" and trained:
                entry["attributes"] = list(self.method(name).condition_names)
            if name == "geogan" and trained:
                entry["attribute"] = self.method(name).attribute
            out[name] = entry
        return out

    def method(self, name: str):
        from facegan.train.loop import load_trained

        if name not in PHOTO_METHODS:
            raise BadRequest(f"unknown method {name!r}: one of {', '.join(PHOTO_METHODS)}")
        if name not in self.loaded:
            try:
                self.loaded[name] = load_trained(name, self.root)
            except FileNotFoundError as err:
                raise BadRequest(str(err)) from None
        return self.loaded[name]

    def apply(self, request: dict) -> dict:
        """{method, photo, settings, reference?} -> {image, notes}."""
        from facegan.faces.paste import paste_faces
        from facegan.methods.base import RESIDUAL_METHODS, RequestError, framed_batch, with_residual

        name = request.get("method")
        photo = decode_data_url(request.get("photo"), "photo")
        settings = request.get("settings") or {}
        with self.lock:
            method = self.method(name)
            options, frame_options = self.options(name, method, settings, request)
            faces = self.landmarker.detect_all(photo, ["hog", "cnn"], largest_only=not settings.get("all_faces"))
            if not faces:
                raise BadRequest("no face found in the photo")
            try:
                framed = [method.frame(photo, face.landmarks, self.align, **frame_options) for face in faces]
                crops, per_face = framed_batch(framed)
                # no inference_mode here: Beholder's transform inverts G by gradient descent
                result = method.transform(crops, **options, **per_face)
                if settings.get("residual") and name in RESIDUAL_METHODS:
                    result = with_residual(crops, result)
            except RequestError as err:
                raise BadRequest(str(err)) from None
            pieces, changes = result.for_paste()   # a residual edit: its change added to the photo itself
            output = paste_faces(photo, pieces, framed, changes)
        return {"image": encode_png(output), "notes": result.notes,
                "faces": len(faces), "faces_seen": faces[0].n_faces}

    def options(self, name: str, method, settings: dict, request: dict) -> tuple[dict, dict]:
        """The page's settings -> transform's options and frame's options, each checked."""
        import torch

        def number(key, low, high, default=None):
            value = settings.get(key, default)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise BadRequest(f"{key}: expected a number, got {value!r}") from None
            if not low <= value <= high:
                raise BadRequest(f"{key} = {value:g}: expected a value in [{low:g}, {high:g}]")
            return value

        if name == "fader":
            asked = settings.get("attributes") or {}
            unknown = sorted(set(asked) - set(method.condition_names))
            if unknown:
                raise BadRequest(f"unknown attribute(s) {', '.join(unknown)}: one of {', '.join(method.condition_names)}")
            return {"attributes": {k: number(k, *EDIT_RANGE, v) for k, v in asked.items()}}, {}
        if name == "beholder":
            from facegan.config import InversionParams

            return {"delta": number("delta", -3, 3, 1.0), "inversion": InversionParams(),
                    "generator": torch.Generator().manual_seed(0)}, {}
        if name == "tpgan":
            yaw = settings.get("yaw")
            return {}, {"yaw": None if yaw in (None, "", "auto") else number("yaw", -90, 90)}
        if name == "geogan":
            from facegan.data.datasets import to_tensor

            reference = decode_data_url(request.get("reference"), "reference photo")
            found = self.landmarker.detect(reference, ["hog", "cnn"])
            if found is None:
                raise BadRequest("no face found in the reference photo")
            return {"reference": to_tensor(method.frame(reference, found.landmarks, self.align).crop[None])}, {}
        return {}, {}


def create_app(root: Path):
    """The ASGI app serving `root`'s trained models."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    models = Models(Path(root))

    async def page(request: Request):
        return HTMLResponse((Path(__file__).parent / "serve.html").read_text())

    async def methods(request: Request):
        try:
            return JSONResponse(models.status())
        except Exception as err:   # a broken model file: said on the page, not a 500
            return JSONResponse({"error": f"cannot list the methods: {err}"}, status_code=400)

    async def apply(request: Request):
        import anyio

        try:
            body = await request.body()
            if len(body) > 3 * MAX_UPLOAD_BYTES:
                raise BadRequest(f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MB", 413)
            import json

            try:
                payload = json.loads(body)
            except ValueError:
                raise BadRequest("the request is not JSON") from None
            if not isinstance(payload, dict):
                raise BadRequest("the request is not a JSON object")
            return JSONResponse(await anyio.to_thread.run_sync(models.apply, payload))
        except BadRequest as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except Exception as err:   # never a 500 with a traceback: the message, and the log has the rest
            import logging

            logging.getLogger("facegan.serve").exception("apply failed")
            return JSONResponse({"error": f"the method failed on this photo: {type(err).__name__}: {err}"},
                                status_code=400)

    return Starlette(routes=[Route("/", page), Route("/api/methods", methods),
                             Route("/api/apply", apply, methods=["POST"])])


def serve(root: Path, port: int = 8000) -> None:
    import uvicorn

    print(f"facegan serve: http://127.0.0.1:{port}/  (Ctrl-C stops it)")
    uvicorn.run(create_app(root), host="127.0.0.1", port=port, log_level="warning")
