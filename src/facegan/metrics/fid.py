"""FID and KID on FID-Inception pool features.

FID (Heusel et al. 2017): |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)),
with tr (S_r S_g)^(1/2) from symmetric eigenvalues (equal to FidHelper's scipy sqrtm; tests check).
KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets; its std over the
subsets is reported too (as in stylegan2-ada's metric).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from facegan.devices import bf16_autocast, precision_used
from facegan.pretrained.fid_inception import load_fid_inception


def to_uint8_batch(images) -> torch.Tensor:
    """Accepts (N, H, W, 3) uint8 arrays or (N, 3, H, W) tensors in [-1, 1]; returns N3HW in [0, 255]."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected N x H x W x 3 uint8 images, got {images.dtype} {images.shape}")
        return torch.from_numpy(images).permute(0, 3, 1, 2)
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5)


@torch.inference_mode()
def inception_features(batches: Iterable, device: str = "cpu", precision: str = "fp32",
                       max_batch: int = 25) -> np.ndarray:
    """2048-d features for every image of every batch (see to_uint8_batch for the formats).

    Batches are cut to `max_batch`: at 299 x 299 larger ones only add memory traffic."""
    model = load_fid_inception(device)
    out = []
    for batch in batches:
        for chunk in to_uint8_batch(batch).split(max_batch):
            x = chunk.to(device).contiguous(memory_format=torch.channels_last)
            with bf16_autocast(device, precision == "bf16"):
                out.append(model(x).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 2048))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with tr (S1 S2)^1/2 = sum sqrt(eig(S1^1/2 S2 S1^1/2)):
    the same eigenvalues as S1 S2, but of a symmetric PSD matrix, so two `eigh` calls replace the general
    `sqrtm` (3x faster at 2048-d, and no imaginary round-off when fewer images than dimensions make S
    singular). Tiny negative eigenvalues from round-off are clipped to 0."""
    diff = np.square(mu1 - mu2).sum()
    root1 = matrix_root(sigma1)
    product = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_covmean = np.sqrt(np.clip(product, 0, None)).sum()
    return float(diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def matrix_root(sigma: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a covariance."""
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance_to_sample(mu1, sigma1, features: np.ndarray) -> float:
    """frechet_distance of (mu1, sigma1) and the statistics of `features` (n, d). With fewer samples than
    dimensions (500 images, 2048-d), S2 = A^T A / (n - 1), A the centred samples, and the nonzero eigenvalues
    of S1^1/2 S2 S1^1/2 are those of A S1 A^T / (n - 1), an n x n matrix: one small `eigvalsh` replaces two
    2048-d `eigh` calls (~0.2 s against ~6 s here; equal to round-off, tests check)."""
    n, d = features.shape
    if n > d:
        return frechet_distance(mu1, sigma1, *statistics(features))
    mu2 = features.mean(0)
    centred = features - mu2
    product = np.linalg.eigvalsh(centred @ sigma1 @ centred.T / (n - 1))
    trace_covmean = np.sqrt(np.clip(product, 0, None)).sum()
    trace2 = np.square(centred).sum() / (n - 1)
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1) + trace2 - 2 * trace_covmean)


def fid_standard_error(reference: dict, fake: np.ndarray, rounds: int = 5, seed: int = 0) -> float:
    """The standard error of FID from the sample of generated images: its std over bootstrap resamples of
    `fake` (the reference statistics fixed). What a difference between two FIDs must exceed to mean more
    than the draw of samples, at this sample size."""
    rng = np.random.default_rng(seed)
    values = [frechet_distance_to_sample(reference["mu"], reference["sigma"], fake[rng.integers(len(fake), size=len(fake))])
              for _ in range(rounds)]
    return float(np.std(values, ddof=1))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance_to_sample(*statistics(real), fake)


def kid(real: np.ndarray, fake: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 estimate over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(len(real), len(fake), subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(real)} real and {len(fake)} generated")
    d = real.shape[1]
    # The cubic kernel k(a, b) = (a.b / d + 1)^3 over all pairs once; each subset then sums sub-blocks
    # (the same numbers as recomputing them per subset, 100 subsets for the price of one).
    k_ff = (fake @ fake.T / d + 1) ** 3
    k_rr = (real @ real.T / d + 1) ** 3
    k_fr = (fake @ real.T / d + 1) ** 3
    values = []
    for _ in range(n_subsets):
        i = rng.choice(len(fake), m, replace=False)
        j = rng.choice(len(real), m, replace=False)
        kxx, kyy, kxy = k_ff[np.ix_(i, i)], k_rr[np.ix_(j, j)], k_fr[np.ix_(i, j)]
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def save_reference(path: Path, features: np.ndarray, **meta) -> None:
    mu, sigma = statistics(features)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, features=features.astype(np.float32), **meta)


def load_reference(path: Path) -> dict:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro fid_stats`")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def fid_kid_against(reference: dict, fake_features: np.ndarray, kid_subsets: int = 100,
                    se_rounds: int = 0) -> dict:
    """The flat metric dict every evaluate stage reports; with `se_rounds`, also FID's bootstrap standard
    error (`fid_se`)."""
    real = reference["features"].astype(np.float64)
    kid_mean, kid_std = kid(real, fake_features, n_subsets=kid_subsets)
    result = {"fid": frechet_distance_to_sample(reference["mu"], reference["sigma"], fake_features),
              "kid": kid_mean, "kid_std": kid_std, "n_real": len(real), "n_fake": len(fake_features)}
    if se_rounds > 1:
        result["fid_se"] = fid_standard_error(reference, fake_features, se_rounds)
    return result


def reference_subset(reference: dict, paths) -> dict:
    """The cached reference of a split restricted to the named images (e.g. GeoGAN's faces with the
    attribute): their rows of the cached features, no second Inception pass."""
    from facegan.data.datasets import rows_of
    import pandas as pd

    if "paths" not in reference:
        raise KeyError("the cached FID reference names no images: run `dvc repro fid_stats`")
    features = reference["features"][rows_of(pd.DataFrame({"path": reference["paths"]}), list(paths))]
    features = features.astype(np.float64)
    mu, sigma = statistics(features)
    return {"features": features, "mu": mu, "sigma": sigma}


def reference_of(images: np.ndarray) -> dict:
    """A reference computed here from (N, H, W, 3) uint8 real images (a set fid_stats does not cache)."""
    features = inception_features([images])
    mu, sigma = statistics(features)
    return {"features": features, "mu": mu, "sigma": sigma}


def fid_kid_of(fakes, reference: dict, kid_subsets: int = 100, se_rounds: int = 0) -> dict:
    """FID/KID of (N, 3, H, W) images in [-1, 1] against a reference (load_reference or reference_of):
    the one helper every evaluate uses."""
    from facegan.data.datasets import to_uint8

    return fid_kid_against(reference, inception_features([to_uint8(fakes)]), kid_subsets, se_rounds)


def reference_path(root: Path, name: str, split: str, size: int) -> Path:
    """Where `fid_stats` caches the real statistics of one (set, split, resolution)."""
    return root / "data" / "fid_stats" / f"{name}_{split}_{size}.npz"


def batches_of(images: np.ndarray, batch_size: int):
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


def run_fid_stats(params, root: Path) -> dict:
    """Stage `fid_stats`: features and (mu, sigma) of each set's real split.

    Also reports the FID between two random halves of the split: the floor that
    sampling noise alone gives at this sample size, for reading other FIDs.
    """
    from facegan.data.datasets import load_images, set_folder
    from facegan.devices import resolve_device

    device = resolve_device(params.device)
    report = {}
    for name in params.sets:
        images, frame = load_images(set_folder(root, name), [params.split])
        features = inception_features(batches_of(images, params.batch_size), device, params.precision)
        size = images.shape[1]
        save_reference(reference_path(root, name, params.split, size), features, set=name, split=params.split,
                       paths=frame["path"].to_numpy(dtype=str),
                       size=size, precision=precision_used(device, params.precision))
        order = np.random.default_rng(0).permutation(len(features))
        half = len(features) // 2
        report[name] = {"images": len(features), "size": size,
                        "fid_half_vs_half": fid_from_features(features[order[:half]], features[order[half:]])}
    return report
