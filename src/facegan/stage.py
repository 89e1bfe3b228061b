"""The shared shell of every pipeline stage: logging, params, one MLflow run."""
from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from typing import Callable

from facegan.config import ConfigError, Params, load_params, section_dict
from facegan.data.quality import DataError
from facegan.tracking import StageRun, stage_run


def run_stage(stage: str, sections: list[str], body: Callable[[Params, StageRun], dict],
              tracking: bool = True) -> None:
    """Load params, open the stage's MLflow run with its params sections, run
    `body`, log the numbers it returns. Known failures exit 1 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = load_params()
        logged = {name: section_dict(functools.reduce(getattr, name.split("."), params)) for name in sections}
        settings = params.tracking if tracking else dataclasses.replace(params.tracking, enabled=False)
        with stage_run(stage, logged, settings) as run:
            run.log_metrics(body(params, run))
    except (ConfigError, DataError, FileNotFoundError) as err:
        logging.getLogger(stage).error("%s", err)
        sys.exit(f"{stage}: {err}")
