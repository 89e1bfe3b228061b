"""CelebA importer: img_align_celeba/, list_attr_celeba.txt, identity_CelebA.txt.

list_attr_celeba.txt as released: line 1 the image count, line 2 the 40
attribute names, then `<image> v1 .. v40` with values +1/-1. Rows whose image
is absent (the mirror holds 10,000 images but 20,000 rows) are skipped and
counted; so are images with no attribute row or no identity.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from facegan.config import SourceParams
from facegan.data.images import import_image
from facegan.data.quality import DataError, SetQuality

ATTR_FILE = "list_attr_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_DIR = "img_align_celeba"


def read_attributes(path: Path, quality: SetQuality) -> tuple[list[str], dict[str, list[int]]]:
    """Attribute names and {image: [0/1 per attribute]}; malformed rows are counted and skipped."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a header line, found {len(lines)} lines")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}: line 1 should be the image count, got {lines[0][:40]!r}") from None
    names = lines[1].split()
    if not names:
        raise DataError(f"{path}: line 2 should list the attribute names, it is empty")
    rows: dict[str, list[int]] = {}
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split()
        quality.read += 1
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            quality.skip(f"{path.name}:{number}", "malformed_attribute_row",
                         f"expected an image name and {len(names)} values of 1/-1")
            continue
        rows[fields[0]] = [1 if v == "1" else 0 for v in fields[1:]]
    if declared != quality.read:
        quality.note("count_line_differs_from_rows")
    return names, rows


def read_identities(path: Path, quality: SetQuality) -> dict[str, str]:
    identities: dict[str, str] = {}
    with open(path) as fh:
        for line in fh:
            fields = line.split()
            if len(fields) != 2:
                if fields:
                    quality.note("malformed_identity_line")
                continue
            identities[fields[0]] = fields[1]
    return identities


def import_celeba(src: Path, out: Path, source: SourceParams, seed: int) -> tuple[pd.DataFrame, SetQuality]:
    quality = SetQuality("celeba")
    for needed in (ATTR_FILE, IDENTITY_FILE, IMAGE_DIR):
        if not (src / needed).exists():
            raise DataError(f"celeba: {src / needed} not found (expected the public img_align_celeba release layout)")
    names, attributes = read_attributes(src / ATTR_FILE, quality)
    identities = read_identities(src / IDENTITY_FILE, quality)
    on_disk = {p.name: p for p in (src / IMAGE_DIR).iterdir() if p.is_file()}

    images = list(attributes)
    if source.max_images:
        quality.note("rows_not_read_max_images", max(0, len(images) - source.max_images))
        quality.read -= max(0, len(images) - source.max_images)
        images = images[: source.max_images]
    records = []
    for image in images:
        if image not in on_disk:
            quality.skip(image, "attribute_row_without_image")
            continue
        if image not in identities:
            quality.skip(image, "no_identity")
            continue
        stored = import_image(on_disk[image], out / "images", quality, image)
        if stored is None:
            continue
        quality.kept += 1
        records.append({"path": f"images/{stored}", "identity": identities[image], "source": image,
                         **dict(zip(names, attributes[image]))})
    if not source.max_images:
        for image in sorted(set(on_disk) - set(attributes)):
            quality.read += 1
            quality.skip(image, "image_without_attribute_row")
    return pd.DataFrame.from_records(records), quality
