"""Training throughput of every method in one run: plain fp32 eager beside the shipped setting
(train.common: bf16 autocast + channels_last) and, with --compile, torch.compile of the trained
networks on top; achieved FLOP/s as a fraction of a bf16 matmul measured in the same run.

    python benchmarks/train_throughput.py [--steps 6] [--methods cgan,dtn] [--compile]

Each method trains at its default params (params.yaml: widths, batch size, resolution) on random
data of its training set's form (`synthetic_data`), through the training loop's own step
(`Trainer.one_step`), from the step where its main phase starts (`Method.steady_step`: DTN's L_TID
warm-up and GeoGAN's D-head and landmark warm-up run only part of the method). DTN's f and TP-GAN's
L_ip use FaceNet with random weights: the same FLOPs as the converted one, so no pipeline data is
needed. FLOPs per step (forward and backward) come from torch.utils.flop_counter, counted once per
method; timing on a shared machine is noisy, so read the ratios, which are measured side by side.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from facegan.config import load_params
from facegan.devices import bf16_supported
from facegan.methods import METHODS, method_class
from facegan.pretrained.facenet import FaceNet, InceptionResnetV1, checkpoint_path
from facegan.train.data import make_batches
from facegan.train.loop import Context, Trainer, build_for_training


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matmul in `dtype` (the hardware's practical ceiling for that dtype)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def variant(params, bf16: bool, channels_last: bool):
    """The params with these speed settings, and no progress checks (they would need the pipeline's data)."""
    common = dataclasses.replace(params.train.common, bf16=bf16, channels_last=channels_last, progress_samples=0)
    return dataclasses.replace(params, train=dataclasses.replace(params.train, common=common))


def trainer_for(name: str, params, root: Path, compiled: bool) -> Trainer:
    """A Trainer on `name`'s synthetic data at its default batch size and resolution."""
    own = getattr(params.train, name)
    size = getattr(own, "size", 0) or params.align.size
    method = build_for_training(name, params, size)
    # 256 at least: DTN (n // 2 targets) fits f_components (64) principal axes of its targets' f
    data = method_class(name).synthetic_data(own, max(4 * method.batch_size, 256), size)
    batches = make_batches(data, method.batch_size, 0, flip=method.flip_augment,
                           channels_last=params.train.common.channels_last)
    trainer = Trainer(method, batches, root / "models" / name, root / "reports" / name, Context(), root=root)
    trainer.step = method.steady_step()   # time the main phase's steps, not a warm-up's partial ones
    if compiled:
        for attribute, net in method.trainable().items():
            setattr(method, attribute, torch.compile(net))
        method.optimizers = method.configure_optimizers()
    return trainer


def timed(trainer: Trainer, steps: int, warmup: int = 2) -> tuple[float, float]:
    """(seconds of the warm-up steps, seconds per step after them)."""
    start = time.perf_counter()
    for _ in range(warmup):   # oneDNN picks its kernels (and torch.compile compiles) on the first calls
        trainer.one_step()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        trainer.one_step()
    return warm, (time.perf_counter() - start) / steps


def flops_per_step(trainer: Trainer) -> float:
    with FlopCounterMode(display=False) as counter:
        trainer.one_step()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile of the trained networks")
    args = parser.parse_args()
    params = load_params()
    shipped = (params.train.common.bf16, params.train.common.channels_last)
    print(f"{torch.get_num_threads()} threads; shipped: bf16={shipped[0]}, channels_last={shipped[1]}")
    peak = matmul_rate(torch.float32)
    print(f"matmul 2048^3 fp32: {peak / 1e9:.0f} GFLOP/s", end="")
    if bf16_supported("cpu"):
        fp32, peak = peak, matmul_rate(torch.bfloat16)
        print(f", bf16: {peak / 1e9:.0f} GFLOP/s ({peak / fp32:.1f}x); the fractions below are of bf16's\n")
    else:   # PyTorch's fallback bf16 matmul runs ~60x slower than fp32 there: nothing to measure
        print("; this CPU has no bf16 instructions (AVX512-bf16/AMX): the shipped setting runs fp32 "
              "(+ channels_last), and the fractions below are of the fp32 matmul rate\n")
    header = (f"{'method':9s} {'batch':>5s} {'GFLOP/step':>10s} {'fp32 img/s':>10s} {'shipped img/s':>13s} "
              f"{'ratio':>6s} {'of matmul':>9s}")
    if args.compile:
        header += f" {'compiled img/s':>14s} {'compile s':>9s} {'break-even min':>14s}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint_path(root).parent.mkdir(parents=True)
        torch.save(FaceNet(InceptionResnetV1()).net.state_dict(), checkpoint_path(root))
        for name in args.methods.split(","):
            method_class(name)
            baseline = trainer_for(name, variant(params, False, False), root, False)
            flops = flops_per_step(baseline)
            _, fp32_s = timed(baseline, args.steps)
            fast = trainer_for(name, variant(params, *shipped), root, False)
            _, fast_s = timed(fast, args.steps)
            batch = fast.method.batch_size
            line = (f"{name:9s} {batch:5d} {flops / 1e9:10.1f} {batch / fp32_s:10.1f} {batch / fast_s:13.1f} "
                    f"{fp32_s / fast_s:5.2f}x {flops / fast_s / peak:8.1%}")
            if args.compile:
                compiled = trainer_for(name, variant(params, *shipped), root, True)
                try:
                    warm, compiled_s = timed(compiled, args.steps)
                except Exception as err:   # an inductor failure is a finding, not the end of the table
                    print(f"{line}   torch.compile fails: {str(err).splitlines()[0][:70]}", flush=True)
                    continue
                cost = warm - 2 * compiled_s           # compiling, beyond the two steps it ran
                # eager minutes after which the compiled run has caught up: cost / (time saved per step) steps
                even = cost / (fast_s - compiled_s) * fast_s / 60 if compiled_s < fast_s else float("inf")
                line += f" {batch / compiled_s:14.1f} {warm:9.0f} {even:14.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
