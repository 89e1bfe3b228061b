"""cgan training throughput: plain fp32 eager vs the configured fast path
(bf16 autocast + channels_last), same architecture, batch and data, same run.

    python benchmarks/train_throughput.py [--steps 8] [--batch 64]
Needs data/aligned/celeba (dvc repro align).
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from facegan.config import load_params
from facegan.methods import method_class
from facegan.paths import project_root
from facegan.train.data import InMemoryBatches
from facegan.train.loop import Context, Trainer


def img_per_s(params, batches, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer("cgan", params, batches, Path(tmp) / "m", Path(tmp) / "r", Context())
        for warm in range(2):  # oneDNN picks its kernels on the first calls
            trainer.step = warm
            run_steps(trainer, 1)
        start = time.perf_counter()
        run_steps(trainer, steps)
        return steps * batches.batch_size / (time.perf_counter() - start)


def run_steps(trainer: Trainer, steps: int) -> None:
    from facegan.train.loop import step_generator

    for _ in range(steps):
        batch = trainer.batches.batch(trainer.step, "cpu")
        if not trainer.channels_last:
            batch["image"] = batch["image"].contiguous()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=trainer.autocast):
            trainer.method.train_step(batch, trainer.step, step_generator(0, trainer.step, 0))
        trainer.method.after_step(trainer.step)
        trainer.step += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=0, help="default: train.common.batch_size")
    args = parser.parse_args()
    params = load_params()
    common = params.train.common
    batch = args.batch or common.batch_size
    images, labels = method_class("cgan").training_data(project_root(), params.train.cgan)
    batches = InMemoryBatches(images, labels, batch, 0)
    rates = {}
    for label, bf16, channels_last in (("fp32 eager", False, False),
                                       ("fast path", common.bf16, common.channels_last)):
        variant = dataclasses.replace(params, train=dataclasses.replace(
            params.train, common=dataclasses.replace(common, bf16=bf16, channels_last=channels_last)))
        rates[label] = img_per_s(variant, batches, args.steps)
        print(f"{label:11s} (bf16={bf16}, channels_last={channels_last}): {rates[label]:7.1f} img/s")
    print(f"ratio fast/fp32: {rates['fast path'] / rates['fp32 eager']:.2f}x  "
          f"(batch {batch}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
