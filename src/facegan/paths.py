"""Where things are: the project (this checkout), the user's repository, the data mirror.

Under `dvc exp run --queue/--temp` a stage runs in a temporary copy of the
project, and DVC points $DVC_ROOT at the user's repository. Params, data and
reports belong to the copy (`project_root`); what must outlive the copy, the
MLflow store, and what the user wrote relative to their checkout, the mirror
path, resolve against `home_root`.
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The nearest parent of the working directory holding dvc.yaml (DVC runs stages there)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".dvc").is_dir():
            return folder
    return here


def home_root() -> Path:
    """$DVC_ROOT when DVC sets it (the user's repository, also for queued experiments), else the project."""
    env = os.environ.get("DVC_ROOT")
    return Path(env).resolve() if env else project_root()


def mirror_root(configured: str) -> Path:
    """FACEGAN_DATA, else `data.mirror` from params (relative to the user's repository)."""
    env = os.environ.get("FACEGAN_DATA")
    path = Path(env) if env else Path(configured)
    if not path.is_absolute():
        path = home_root() / path
    return path.resolve()
