"""The one training loop for every method.

device `auto`; bf16 autocast and channels_last where the hardware has bf16
(AVX512-bf16/AMX CPUs, bf16 GPUs), switchable; every step's randomness from a
generator seeded by (seed, step, rank), so resuming from a checkpoint repeats
an uninterrupted run; a checkpoint every `checkpoint_every` steps and when the
wall-clock budget `max_minutes` runs out; a loss CSV row every `log_every`
steps and a sample grid every `sample_every` (both DVC plots); MLflow metrics;
DistributedDataParallel when started by torchrun (gloo on CPU, nccl on GPU),
where rank 0 alone writes. While it trains, rank 0 logs the method's cheap quality
figure (Method.progress_probe) to reports/train/<method>/progress.csv: tried every
`progress_every` steps, run only while the checks cost at most `progress_share` of
the run's time, and always at the end of the run.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torchvision.utils import save_image
from tqdm import tqdm

from facegan.devices import bf16_autocast, bf16_supported, resolve_device
from facegan.methods import Method, method_class

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def writer(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start_context(device: str) -> Context:
    """Join the torchrun process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return Context(rank, world, device)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 97 + rank) % (2 ** 63))


def strip_ddp(state: dict) -> dict:
    return {k.replace(".module.", "."): v for k, v in state.items()}


def distributed_wrapper(device: str):
    """Wraps a network in DistributedDataParallel (gloo on CPU, nccl on GPU)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return lambda net: DDP(net, device_ids=[device] if device.startswith("cuda") else None, broadcast_buffers=False)


class Trainer:
    """Trains a BUILT method (its params, resolved batch size and budget travel with it) on `batches`."""

    def __init__(self, method: Method, batches, out_dir: Path, report_dir: Path, context: Context,
                 run=None, root: Path | None = None):
        self.method, self.name, self.common = method, method.name, method.common
        self.batches, self.out_dir, self.report_dir, self.ctx, self.run = batches, out_dir, report_dir, context, run
        self.autocast = self.common.bf16 and bf16_supported(context.device)
        self.channels_last = self.common.channels_last
        self.method.to(context.device)
        if root is not None:
            self.method.setup(Path(root), context.device)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.method.prepare(None if batches.labels is None else batches.labels.to(context.device))
        self.method.fit_to_training_data(batches)
        n = self.common.progress_samples
        self.probe = (self.method.progress_probe(Path(root), batches.labels, n)
                      if root is not None and n > 0 and context.writer else None)
        self.progress_seconds, self.last_progress_seconds = 0.0, 0.0   # all checks so far; the last one
        self.step = 0
        self.checked_logs: set[str] = set()   # logs whose header was compared with this run's columns
        state = self._load_checkpoint()
        wrap = distributed_wrapper(context.device) if context.distributed else None
        self.method.start_training(batches.examples(8, context.device), wrap)
        if state:
            for key, optimizer in self.method.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][key])

    # ---------------------------------------------------------------- checkpoints
    def _load_checkpoint(self) -> dict | None:
        path = self.out_dir / CHECKPOINT
        if not path.exists():
            return None
        state = torch.load(path, map_location=self.ctx.device, weights_only=True)
        if state.get("fingerprint") != self.method.fingerprint():
            log.info("%s: %s was trained with other params; starting afresh", self.name, path)
            return None
        self.method.load_state_dict(state["method"])
        self.step = int(state["step"])
        log.info("%s: resumed from %s at step %d", self.name, path, self.step)
        return state

    def save_checkpoint(self) -> None:
        if not self.ctx.writer:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {"step": self.step, "fingerprint": self.method.fingerprint(),
                 "method": strip_ddp(self.method.state_dict()),
                 "optimizers": {k: o.state_dict() for k, o in self.method.optimizers.items()}}
        tmp = self.out_dir / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / CHECKPOINT)

    def export(self, summary: dict) -> None:
        """Weights and the params they were built with, for evaluation and the CLI."""
        if not self.ctx.writer:
            return
        torch.save(strip_ddp(self.method.state_dict()), self.out_dir / MODEL)
        meta = {"method": self.name, "params": asdict(self.method.params),
                "common": asdict(self.common), "size": self.method.image_size, **summary}
        (self.out_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    # ---------------------------------------------------------------- logging
    def _append_row(self, name: str, row: dict) -> None:
        """One row of reports/train/<method>/<name> (the header with the first; a resumed log whose columns
        changed, e.g. a loss added to the method, is rewritten under the new ones, absent values empty)."""
        path = self.report_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and name not in self.checked_logs:    # once per file and run: not on every row
            self.checked_logs.add(name)
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                old = list(reader)
                header = reader.fieldnames or []
            if header != list(row):
                with open(path, "w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=list(row), restval="", extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(old)
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _log_losses(self, losses: dict, speed: float) -> None:
        if not self.ctx.writer:
            return
        row = {"step": self.step, **{k: round(v, 6) for k, v in losses.items()}, "img_per_s": round(speed, 2)}
        self._append_row("losses.csv", row)
        if self.run:
            self.run.log_metrics(row, step=self.step)

    def _trim_logs(self) -> None:
        """On resume, drop loss and progress rows logged after the checkpoint (they will be logged again); on a
        fresh start, the whole logs (an earlier run's, kept by DVC's persist)."""
        for path in (self.report_dir / "losses.csv", self.report_dir / "progress.csv"):
            if not self.ctx.writer or not path.exists():
                continue
            if self.step == 0:
                path.unlink()
                continue
            with open(path) as fh:
                rows = list(csv.DictReader(fh))
            if not rows:
                continue
            with open(path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(r for r in rows if int(r["step"]) <= self.step)

    def _trim_samples(self) -> None:
        """On (re)start, drop sample grids of steps after the checkpoint: a fresh start must not leave an
        earlier run's later grids in the series (the report shows the last one)."""
        if not self.ctx.writer:
            return
        for grid in (self.report_dir / "samples").glob("step_*.png"):
            if int(grid.stem.removeprefix("step_")) > self.step:
                grid.unlink()

    def save_samples(self) -> None:
        if not self.ctx.writer:
            return
        folder = self.report_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        with bf16_autocast(self.ctx.device, self.autocast):
            grid = self.method.sample_grid(torch.Generator().manual_seed(self.common.seed)).float()
        save_image(grid.add(1).div(2).clamp(0, 1), folder / f"step_{self.step:06d}.png",
                   nrow=self.method.grid_columns)

    def log_progress(self, elapsed: float, final: bool = False) -> None:
        """The quality figure now, if the checks so far and this one (estimated by the last) stay within
        progress_share of the `elapsed` seconds; at the end of the run (`final`) always: the figure a
        user reads is the trained model's, so the checks cost at most the share plus one check."""
        if self.probe is None:
            return
        if self.progress_seconds + self.last_progress_seconds > self.common.progress_share * elapsed and not final:
            return
        modes = {module: module.training for module in self.method.modules()}
        start = time.monotonic()
        values = self.probe()
        self.last_progress_seconds = time.monotonic() - start
        self.progress_seconds += self.last_progress_seconds
        for module, mode in modes.items():   # a probe may leave networks in eval mode
            module.train(mode)
        self._append_row("progress.csv", {"step": self.step, "minutes": round(elapsed / 60, 2),
                                          **{k: round(v, 5) for k, v in values.items()}})
        if self.run:
            self.run.log_metrics({f"progress_{k}": v for k, v in values.items()}, step=self.step)

    # ---------------------------------------------------------------- the loop
    def _should_stop(self, started: float) -> bool:
        stop = torch.tensor(float(time.monotonic() - started > self.method.max_minutes * 60))
        if self.ctx.distributed:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        return bool(stop.item())

    def one_step(self) -> tuple[dict[str, float], int]:
        """The next batch, one train_step under the configured autocast, the after-step hook: (losses, images)."""
        batch = self.batches.batch(self.step, self.ctx.device)
        with bf16_autocast(self.ctx.device, self.autocast):
            losses = self.method.train_step(batch, self.step, step_generator(self.common.seed, self.step,
                                                                             self.ctx.rank))
        self.method.after_step(self.step)
        self.step += 1
        return losses, len(batch["image"])

    def fit(self) -> dict:
        common = self.common
        self._trim_logs()
        self._trim_samples()
        started = time.monotonic()
        window_start, window_images = time.monotonic(), 0
        stopped_by = "max_steps"
        progress = tqdm(total=common.max_steps, initial=self.step, desc=f"train {self.name}", unit="step",
                        disable=not self.ctx.writer, mininterval=5)
        while self.step < common.max_steps:
            if self._should_stop(started):
                stopped_by = "max_minutes"
                break
            losses, images = self.one_step()
            window_images += images * self.ctx.world_size
            progress.update(1)
            if self.step % common.log_every == 0 or self.step == common.max_steps:
                speed = window_images / max(1e-9, time.monotonic() - window_start)
                self._log_losses(losses, speed)
                progress.set_postfix({k: f"{v:.3f}" for k, v in losses.items()} | {"img/s": f"{speed:.0f}"})
                window_start, window_images = time.monotonic(), 0
            if self.step % common.checkpoint_every == 0:
                self.save_checkpoint()
            if self.step % common.sample_every == 0:
                self.save_samples()
            if self.step % common.progress_every == 0:
                self.log_progress(time.monotonic() - started)
        progress.close()
        self.save_checkpoint()
        self.save_samples()
        self.log_progress(time.monotonic() - started, final=True)
        minutes = (time.monotonic() - started) / 60
        summary = {"steps": self.step, "stopped_by": stopped_by, "minutes_this_run": round(minutes, 2),
                   "progress_checks_minutes": round(self.progress_seconds / 60, 2),
                   "bf16": self.autocast, "channels_last": self.channels_last, "processes": self.ctx.world_size}
        self.export(summary)
        return summary


def build_for_training(name: str, params, image_size: int) -> Method:
    """The method built once, its initial weights drawn from train.common.seed."""
    torch.manual_seed(params.train.common.seed)
    return method_class(name).build(params, image_size)


def load_trained(name: str, root: Path, device: str = "cpu") -> Method:
    """A trained method from models/<name>/, built with the params it was trained with."""
    from facegan.config import Params, build

    folder = Path(root) / "models" / name
    if not (folder / MODEL).exists():
        raise FileNotFoundError(f"method {name!r} is not trained yet: run `dvc repro train@{name}`")
    meta = json.loads((folder / "model.json").read_text())
    params = build(Params, {"train": {"common": meta["common"], name: meta["params"]}})
    method = method_class(name).build(params, int(meta["size"]))
    method.load_state_dict(torch.load(folder / MODEL, map_location=device, weights_only=True))
    method = method.to(device).eval()
    method.setup(Path(root), device)
    return method
