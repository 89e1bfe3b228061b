"""Reading image files defensively: decode fully, name what is wrong."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facegan.data.quality import SetQuality


def decode(path: Path) -> tuple[Image.Image | None, str]:
    """Fully decode an image; returns (image, '') or (None, reason)."""
    try:
        image = Image.open(path)
        image.load()  # reads every byte (a truncated file fails here) and releases the file
        return image, ""
    except FileNotFoundError:
        return None, "missing_file"
    except UnidentifiedImageError:
        return None, "not_an_image"
    except (OSError, SyntaxError, ValueError) as err:
        return None, "truncated" if "truncated" in str(err).lower() else "undecodable"


def load_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8; raises ValueError naming the file when it cannot be decoded."""
    image, reason = decode(Path(path))
    if image is None:
        raise ValueError(f"{path}: cannot read image ({reason})")
    return np.asarray(image.convert("RGB"))


def import_image(src: Path, dst_dir: Path, quality: SetQuality, item: str) -> str | None:
    """Check one source image and place it in dst_dir.

    RGB JPEG/PNG files are copied byte for byte; anything else that decodes
    (grayscale, palette, RGBA, other formats) is converted to RGB PNG and
    counted in the notes. Returns the stored file name, or None when skipped.
    """
    image, reason = decode(src)
    if image is None:
        quality.skip(item, reason, str(src))
        return None
    dst_dir.mkdir(parents=True, exist_ok=True)
    if image.mode == "RGB" and image.format in ("JPEG", "PNG"):
        name = src.name
        shutil.copyfile(src, dst_dir / name)
    else:
        quality.note(f"converted_{image.mode}_to_rgb")
        name = src.stem + ".png"
        image.convert("RGB").save(dst_dir / name)
    return name
