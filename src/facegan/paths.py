"""Where things are: the repository root and the read-only data mirror."""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """$DVC_ROOT when DVC runs the stage (queued experiments run in a temp copy),
    else the nearest parent of the working directory holding dvc.yaml."""
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".dvc").is_dir():
            return folder
    return here


def mirror_root(configured: str) -> Path:
    """FACEGAN_DATA, else `data.mirror` from params (relative to the repo root)."""
    env = os.environ.get("FACEGAN_DATA")
    path = Path(env) if env else Path(configured)
    if not path.is_absolute():
        path = repo_root() / path
    return path.resolve()
