"""Stage `ingest`: every configured public release -> data/raw/<set>/ (manifest + images)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from facegan.config import Params
from facegan.data.celeba import import_celeba
from facegan.data.emoji import import_emoji
from facegan.data.london import import_london
from facegan.data.manifest import assign_splits, write_manifest
from facegan.data.quality import DataError, SetQuality, write_part
from facegan.data.scut import import_scut
from facegan.data.umist import import_umist
from facegan.paths import mirror_root

log = logging.getLogger(__name__)

IMPORTERS = {
    "celeba": import_celeba,
    "london": import_london,
    "umist": import_umist,
    "emoji": import_emoji,
    "scut": import_scut,
}


def run_ingest(params: Params, out_root: Path, quality_path: Path) -> dict:
    """Import each set; write the quality part; fail only when a set keeps too little."""
    mirror = mirror_root(params.data.mirror)
    qualities: dict[str, SetQuality] = {}
    for name in params.ingest.sets:
        source = getattr(params.ingest, name)
        src = mirror / source.folder
        if not src.is_dir():
            raise DataError(f"{name}: {src} not found; point FACEGAN_DATA or data.mirror at the folder "
                            f"holding {source.folder}/ (README, section Data)")
        out = out_root / name
        shutil.rmtree(out, ignore_errors=True)
        frame, quality = IMPORTERS[name](src, out, source, params.data.seed)
        if len(frame):
            write_manifest(assign_splits(frame, source.split, params.data.seed), out)
        quality.write_skipped(out / "skipped.csv")
        qualities[name] = quality
        log.info("%s: read %d, kept %d, skipped %s", name, quality.read, quality.kept, dict(quality.skipped))
    report = write_part(quality_path, "ingest", qualities)
    for name, quality in qualities.items():
        quality.require(params.ingest.min_kept_fraction, "ingest.min_kept_fraction")
    return report
