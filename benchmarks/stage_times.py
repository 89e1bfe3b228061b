"""How long each stage of the last `dvc repro` took, from its MLflow run (start to end), and the share
of training: the numbers behind README's timing table.

    python benchmarks/stage_times.py [--since ISO-TIME] [--total SECONDS]

--since: only runs started after it (default: every stage's latest run); --total: the whole
`make run` wall time, to show what the stages leave to installing, DVC and process start-up.
"""
from __future__ import annotations

import argparse
from datetime import datetime

from facegan.config import load_params
from facegan.paths import project_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--since", default=None, help="ISO time, e.g. 2026-12-01T21:37")
    parser.add_argument("--total", type=float, default=0.0, help="the whole run's wall time in seconds")
    args = parser.parse_args()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project_root() / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[load_params().tracking.experiment], filter_string=
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])
    if args.since:
        runs = runs[runs["start_time"] >= datetime.fromisoformat(args.since).astimezone()]
    latest = runs.groupby("tags.mlflow.runName").tail(1)
    seconds = {row["tags.mlflow.runName"]: (row["end_time"] - row["start_time"]).total_seconds()
               for _, row in latest.iterrows()}
    stages = sum(seconds.values())
    training = sum(v for k, v in seconds.items() if k.startswith("train@"))
    for name, value in seconds.items():
        print(f"{name:22s} {int(value // 60):3d}:{int(value % 60):02d}")
    print(f"{'stages in all':22s} {int(stages // 60):3d}:{int(stages % 60):02d}   training "
          f"{int(training // 60)}:{int(training % 60):02d} ({training / stages:.0%} of the stages)")
    if args.total:
        rest = args.total - stages
        print(f"{'whole run':22s} {int(args.total // 60):3d}:{int(args.total % 60):02d}   training "
              f"{training / args.total:.0%}; install, DVC and start-up {int(rest // 60)}:{int(rest % 60):02d}")


if __name__ == "__main__":
    main()
