"""The validity ladder: does a metric rank image sets of known, decreasing quality in that order?

From a prepared set, half the images (a seeded random half) are the reference; the other half, held out,
is degraded in steps a CT reader would rank in this order: the held-out images as they are, mild then
strong Gaussian blur, additive noise at two levels, a shifted intensity window, a mode-collapsed set (a
few images repeated), 8 x 8 shuffled patches, uniform noise. Each metric measures every rung against the
reference; Spearman's rank correlation of its values with the rung order, and whether the held-out real
images score best, say whether the metric can be trusted on this data. Nothing here writes a file; the
CLI writes ladder.json and the figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from heartjobs.errors import HeartjobsError
from heartjobs.progress import console
from heartjobs.store.prepared import PreparedSet

from . import radiomics
from .driver import library_versions
from .inception import FeatureExtractor
from .metrics import METRICS as REGISTRY
from .metrics import Options, Reference, in_space, singular_warnings
from .weights import resolve_weights

METRICS = tuple(REGISTRY)
# Within each kind of degradation, (weaker, stronger): the stronger must score worse.
SEVERITY_PAIRS = (("blur_mild", "blur_strong"), ("noise_low", "noise_high"))
PASS_RULE = (
    "every degraded rung scores worse (higher) than the held-out real images, and within blur and within "
    "noise the stronger level scores worse (Heusel et al. 2017); Spearman's rho with the listed order is "
    "reported, not required"
)
MODE_COLLAPSE_DISTINCT = 4


@dataclass(frozen=True)
class Rung:
    name: str
    description: str
    make: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # held-out uint8 N x H x W -> degraded


def _round_to_pixels(x: np.ndarray) -> np.ndarray:
    """Grey values computed in float back to uint8 pixels (rounded, clipped)."""
    return np.rint(np.clip(x, 0, 255)).astype(np.uint8)


def _blur(sigma_at_64: float) -> Callable:
    def make(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        sigma = sigma_at_64 * images.shape[-1] / 64  # the same blur relative to the anatomy at any size
        return _round_to_pixels(gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma)))

    return make


def _noise(std: float) -> Callable:
    return lambda images, rng: _round_to_pixels(images + rng.normal(0.0, std, images.shape))


def _window_shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # the window moved by 20% of its width: brighter, with the top of the range clipped
    return _round_to_pixels(images.astype(np.float64) + 51)


def _mode_collapse(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picks = rng.choice(len(images), min(MODE_COLLAPSE_DISTINCT, len(images)), replace=False)
    return images[np.resize(picks, len(images))]


def _shuffled_patches(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, h, w = images.shape
    ph, pw = h // 8, w // 8
    patches = images.reshape(n, 8, ph, 8, pw).transpose(0, 1, 3, 2, 4).reshape(n, 64, ph, pw)
    shuffled = np.stack([p[rng.permutation(64)] for p in patches])
    return shuffled.reshape(n, 8, 8, ph, pw).transpose(0, 1, 3, 2, 4).reshape(n, h, w)


RUNGS: tuple[Rung, ...] = (
    Rung("held_out", "held-out real images", lambda images, rng: images.copy()),
    Rung("blur_mild", "Gaussian blur, sigma 1 px at 64 px", _blur(1.0)),
    Rung("blur_strong", "Gaussian blur, sigma 3 px at 64 px", _blur(3.0)),
    Rung("noise_low", "additive Gaussian noise, std 8 grey levels", _noise(8.0)),
    Rung("noise_high", "additive Gaussian noise, std 32 grey levels", _noise(32.0)),
    Rung("window_shift", "intensity window shifted by 51 grey levels (20%), clipped", _window_shift),
    Rung("mode_collapse", f"{MODE_COLLAPSE_DISTINCT} held-out images repeated", _mode_collapse),
    Rung("shuffled_patches", "each image cut into 8 x 8 patches, shuffled", _shuffled_patches),
    Rung("uniform_noise", "uniform random pixels", lambda images, rng: rng.integers(0, 256, images.shape, np.uint8)),
)


def parse_metrics(text: str) -> tuple[str, ...]:
    metrics = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise HeartjobsError(f"--metrics: {','.join(unknown) or '(none)'}: choose from {','.join(METRICS)}")
    return metrics


def spearman(values: list[float]) -> float | None:
    """Spearman's rank correlation of the values with their position (the intended order); None when the
    values are all equal (no ranking at all)."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(np.arange(len(values)), values).statistic)
    return None if np.isnan(rho) else rho


def verdict(values: dict[str, float]) -> dict:
    """One metric's verdict from its value per rung (PASS_RULE), with what failed in words."""
    real = values["held_out"]
    failures = [
        f"{name} ({values[name]:.4g}) not worse than held-out real ({real:.4g})"
        for name in values
        if name != "held_out" and not values[name] > real
    ]
    failures += [
        f"{strong} ({values[strong]:.4g}) not worse than {weak} ({values[weak]:.4g})"
        for weak, strong in SEVERITY_PAIRS
        if not values[strong] > values[weak]
    ]
    rho = spearman([values[rung.name] for rung in RUNGS])
    return {"passes": not failures, "failures": failures, "spearman": rho}


def build_sets(prepared: PreparedSet, n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(the reference images, {rung name: its images}), n images each, from disjoint halves of the set."""
    if prepared.count < 4:
        raise HeartjobsError(f"{prepared.path}: {prepared.count} images; the ladder needs at least 4")
    if prepared.size % 8:
        raise HeartjobsError(f"{prepared.path}: image size {prepared.size}; the ladder's 8 x 8 patches need n x 8")
    n = min(n, prepared.count // 2)
    order = np.random.default_rng(seed).permutation(prepared.count)
    images = np.asarray(prepared.images)
    reference, held_out = images[np.sort(order[:n])], images[np.sort(order[n : 2 * n])]
    rng = np.random.default_rng(seed + 1)
    return reference, {rung.name: rung.make(held_out, rng) for rung in RUNGS}


def run_ladder(
    prepared: PreparedSet,
    metrics: tuple[str, ...],
    *,
    n: int = 100,
    seed: int = 0,
    weights: str = "standard",
    dims: int = 2048,
    batch_size: int = 50,
    device: torch.device | None = None,
) -> dict:
    """Every rung measured by every metric against the reference; the values, rank correlations, verdicts
    and the protocol of each metric."""
    started = time.perf_counter()
    device = device or torch.device("cpu")
    if "frd" in metrics:
        radiomics.check_available()
    reference, sets = build_sets(prepared, n, seed)
    n = len(reference)
    values: dict[str, dict[str, float]] = {rung.name: {} for rung in RUNGS}
    protocol: dict[str, dict] = {}
    chosen = [REGISTRY[name] for name in metrics]
    # one subset of all n for KID: every subset would be the whole set again
    options = Options(seed=seed, kid_subsets=1, kid_subset_size=n)
    if in_space(chosen, "inception"):
        inception = resolve_weights(weights)
        extractor = FeatureExtractor(inception, dims, device, batch_size)

        def features(images: np.ndarray, label: str) -> np.ndarray:
            tensor = torch.from_numpy(images).unsqueeze(1)
            chunks = (tensor[i : i + batch_size] for i in range(0, len(tensor), batch_size))
            return extractor.of_batches(chunks, len(tensor), label)

        real = Reference.of(features(reference, "reference: Inception features"))
        for rung in RUNGS:
            fake = features(sets[rung.name], f"{rung.name}: Inception features")
            for metric in in_space(chosen, "inception"):
                values[rung.name][metric.name] = metric.value(metric.compute(real, fake, options)[0])
        inception_protocol = {"weights": inception.describe(), "standard_weights": inception.standard, "dims": dims}
        protocol |= {m.name: inception_protocol for m in in_space(chosen, "inception")}
    if in_space(chosen, "radiomics"):
        real_radiomics = radiomics.extract(reference, "reference: radiomic features", device=device)
        for rung in RUNGS:
            generated = radiomics.extract(sets[rung.name], f"{rung.name}: radiomic features", device=device)
            for metric in in_space(chosen, "radiomics"):
                values[rung.name][metric.name] = metric.value(metric.compute(real_radiomics, generated, options)[0])
        protocol |= {
            m.name: {"version": radiomics.FRD_VERSION, "versions": radiomics.versions(radiomics.DEFAULT_BACKEND)}
            for m in in_space(chosen, "radiomics")
        }
    warnings = []
    if in_space(chosen, "inception"):
        warnings += singular_warnings("inception", {"n": n}, dims)
    if in_space(chosen, "radiomics"):
        warnings += singular_warnings("radiomics", {"n": n}, radiomics.FEATURES_KEPT, approximate=True)
    for text in warnings:
        console.print(f"warning: {text}")
    verdicts = {metric: verdict({rung: v[metric] for rung, v in values.items()}) for metric in metrics}
    for metric, result in verdicts.items():
        if not result["passes"]:
            console.print(f"warning: {metric} fails the validity ladder: {'; '.join(result['failures'])}")
    return {
        "prepared": str(prepared.path),
        "content_hash": prepared.content_hash,
        "size": prepared.size,
        "n": n,
        "seed": seed,
        "metrics": list(metrics),
        "rungs": [{"name": r.name, "description": r.description, **values[r.name]} for r in RUNGS],
        "verdicts": verdicts,
        "pass_rule": PASS_RULE,
        "warnings": warnings,
        "protocol": protocol,
        "versions": library_versions(),
        "seconds": round(time.perf_counter() - started, 3),
    }
