"""The shared shell of every pipeline stage: logging, params, one MLflow run.

A stage's body sees only the params keys its dvc.yaml entry declares under `params:`: reading any
other key raises ConfigError naming it, so a key that changes a stage's output can never be left out
of what DVC tracks for it (the end-to-end test runs every stage under this guard).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from pathlib import Path
from typing import Callable

import yaml

from facegan.config import ConfigError, Params, load_params, section_dict
from facegan.data.quality import DataError
from facegan.paths import project_root
from facegan.tracking import StageRun, stage_run


def declared_params(stage: str, dvc_file: Path | None = None) -> list[str] | None:
    """The params keys dvc.yaml declares for `stage` ("train@cgan": the foreach entry with ${key}
    filled in), or None when dvc.yaml has no such stage."""
    path = dvc_file or project_root() / "dvc.yaml"
    if not path.exists():
        return None
    stages = yaml.safe_load(path.read_text()).get("stages", {})
    name, _, key = stage.partition("@")
    entry = stages.get(name)
    if entry is None:
        return None
    if key:
        if "foreach" not in entry or key not in entry["foreach"]:
            return None
        entry = entry["do"]
    keys = []
    for item in entry.get("params", []):
        keys += [str(k) for k in item] if isinstance(item, dict) else [str(item)]
    return [k.replace("${key}", key) for k in keys]


class GuardedParams:
    """A read-only view of Params that lets through only the declared keys (and the sections above them)."""

    def __init__(self, value, allowed: list[str], stage: str, path: str = ""):
        self._value, self._allowed, self._stage, self._path = value, allowed, stage, path

    def __getattr__(self, name: str):
        path = f"{self._path}.{name}" if self._path else name
        value = getattr(self._value, name)
        if any(path == key or path.startswith(key + ".") for key in self._allowed):
            return value
        if any(key.startswith(path + ".") for key in self._allowed):
            return GuardedParams(value, self._allowed, self._stage, path)
        raise ConfigError(f"stage {self._stage} reads params key '{path}', which dvc.yaml does not declare in its "
                          "params: add it there, or DVC will not re-run the stage when it changes")

    def __repr__(self) -> str:
        return f"GuardedParams({self._path or 'params'}: {', '.join(self._allowed)})"


def run_stage(stage: str, sections: list[str], body: Callable[[Params, StageRun], dict],
              tracking: bool = True) -> None:
    """Load params, open the stage's MLflow run with its params sections, run `body` on the params
    dvc.yaml declares for the stage, log the numbers it returns. Known failures exit 1 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = load_params()
        logged = {name: section_dict(functools.reduce(getattr, name.split("."), params)) for name in sections}
        settings = params.tracking if tracking else dataclasses.replace(params.tracking, enabled=False)
        declared = declared_params(stage.split(":")[0])
        visible = params if declared is None else GuardedParams(params, declared, stage)
        with stage_run(stage, logged, settings) as run:
            run.log_metrics(body(visible, run))
    except (ConfigError, DataError, FileNotFoundError) as err:
        logging.getLogger(stage).error("%s", err)
        sys.exit(f"{stage}: {err}")
