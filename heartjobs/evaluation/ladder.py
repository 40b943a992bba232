"""The validity ladder: does each metric's number rank image sets of known quality as its question says?

From a prepared set, half the images (a seeded random half) are the reference, and they play the training
set; the other half, held out, is degraded in steps a CT reader would rank: the held-out images as they
are, mild then strong Gaussian blur, additive noise at two levels, a shifted intensity window, half the
modes (the held-out images of half their clusters), a mode-collapsed set (a few images repeated), 8 x 8
shuffled patches, uniform noise; and one rung is the reference itself ("memorised": training slices
returned). Every number of every metric (heartjobs.evaluation.metrics) measures every rung against the
reference, and is judged on the rungs of its question (QUESTION_RUNGS, PASS_RULES): overall and fidelity
numbers must score the degradations worse than the held-out images, diversity numbers must rank half the
modes and mode collapse below them, memorisation must flag the memorised rung and no other. Nothing here
writes a file; the CLI writes ladder.json and the figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from heartjobs.errors import HeartjobsError
from heartjobs.progress import console
from heartjobs.spec.loading import overridden
from heartjobs.spec.schema import EvalSection
from heartjobs.store.prepared import PreparedSet

from . import radiomics
from .driver import feature_network, library_versions
from .metrics import METRICS as REGISTRY
from .metrics import Metric, Number, Options, Reference, in_space, singular_warnings

METRICS = tuple(REGISTRY)
# Within each kind of degradation, (weaker, stronger): the stronger must score worse.
SEVERITY_PAIRS = (("blur_mild", "blur_strong"), ("noise_low", "noise_high"))
MODE_COLLAPSE_DISTINCT = 4
# half_modes: k-means clusters of the held-out images (at most this many, about 3 images each at least)
HALF_MODES_CLUSTERS = 8
# Each question's rungs, in the order a number that answers it should rank them (best first). The
# degradation rungs are the ladder's first ones; half_modes and memorised are shown for every number but
# judged only where they mean something: a number of realism need not mind that half the clusters are
# missing, nor a few real images repeated (mode collapse is no fidelity loss), nor training slices.
DEGRADATIONS = ("blur_mild", "blur_strong", "noise_low", "noise_high", "window_shift")
QUESTION_RUNGS: dict[str, tuple[str, ...]] = {
    "overall": ("held_out", *DEGRADATIONS, "mode_collapse", "shuffled_patches", "uniform_noise"),
    "fidelity": ("held_out", *DEGRADATIONS, "shuffled_patches", "uniform_noise"),
    "diversity": ("held_out", "half_modes", "mode_collapse"),
}
_SEVERITY = (
    "within blur and within noise the stronger level scores worse (Heusel et al. 2017); Spearman's rho with "
    "the listed order is reported, not required"
)
PASS_RULES: dict[str, str] = {
    "overall": "every degraded rung (blur, noise, window shift, mode collapse, shuffled patches, uniform noise) "
    f"scores worse than the held-out real images, and {_SEVERITY}",
    "fidelity": "every degraded rung but mode collapse (its images are real) scores worse than the held-out "
    f"real images, and {_SEVERITY}",
    "diversity": "half the modes scores worse than the held-out real images, and mode collapse (4 images) worse "
    "than half the modes (Odena et al. 2017; Kynkäänniemi et al. 2019; Naeem et al. 2020); Spearman's rho "
    "with that order is reported",
    "memorisation": "the memorised rung (the training slices themselves) is flagged, and no other rung is "
    "(neither the held-out real images nor noise)",
}
PASS_RULE = PASS_RULES["overall"]  # the rule of FID, KID and FRD, as before the questions


@dataclass(frozen=True)
class Rung:
    name: str
    description: str
    make: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # uint8 N x H x W -> the rung's images
    source: str = "held_out"  # the images `make` is given: the held-out half, or the reference (training) half
    stream: int = 0  # 0: the degradations' shared random stream; others: the rung's own (see build_sets)


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


def _memorised(reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # a copycat generator: n training slices returned as they are (all of them, in a seeded order)
    return reference[rng.permutation(len(reference))]


def clusters(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cluster label per image: k-means (scipy's kmeans2, k-means++ seeding from `rng`) on each image's
    8 x 8 grid of mean grey levels (64 values: the anatomy's layout, not its texture), with k =
    HALF_MODES_CLUSTERS, fewer for small sets (about 3 images per cluster, at least 2 clusters)."""
    from scipy.cluster.vq import kmeans2

    n, h, w = images.shape
    grid = images.reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4), dtype=np.float64).reshape(n, 64)
    k = max(2, min(HALF_MODES_CLUSTERS, n // 3))
    _, labels = kmeans2(grid, k, minit="++", seed=rng)
    return labels


def _half_modes(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A generator that draws from half of the real set's modes: the held-out images of every second
    # cluster by size (the largest, the third, ...: about half the images, whole regions of the set
    # missing), each kept image used in turn (a seeded order) until there are n, so ~n/2 distinct images.
    labels = clusters(images, rng)
    ids, sizes = np.unique(labels, return_counts=True)  # empty clusters do not appear
    by_size = ids[np.lexsort((ids, -sizes))]
    kept = np.flatnonzero(np.isin(labels, by_size[::2]))
    return images[np.resize(rng.permutation(kept), len(images))]


RUNGS: tuple[Rung, ...] = (
    Rung("held_out", "held-out real images", lambda images, rng: images.copy()),
    Rung("memorised", "training slices returned (the reference images themselves)", _memorised, "reference", 1),
    Rung("blur_mild", "Gaussian blur, sigma 1 px at 64 px", _blur(1.0)),
    Rung("blur_strong", "Gaussian blur, sigma 3 px at 64 px", _blur(3.0)),
    Rung("noise_low", "additive Gaussian noise, std 8 grey levels", _noise(8.0)),
    Rung("noise_high", "additive Gaussian noise, std 32 grey levels", _noise(32.0)),
    Rung("window_shift", "intensity window shifted by 51 grey levels (20%), clipped", _window_shift),
    Rung(
        "half_modes",
        f"half the modes: the held-out images of every second of <= {HALF_MODES_CLUSTERS} k-means clusters "
        "(by size), repeated to n",
        _half_modes,
        stream=2,
    ),
    Rung("mode_collapse", f"{MODE_COLLAPSE_DISTINCT} held-out images repeated", _mode_collapse),
    Rung("shuffled_patches", "each image cut into 8 x 8 patches, shuffled", _shuffled_patches),
    Rung("uniform_noise", "uniform random pixels", lambda images, rng: rng.integers(0, 256, images.shape, np.uint8)),
)


def available_metrics() -> tuple[str, ...]:
    """The default: every registry metric whose space can be measured here (the radiomic ones only with
    frd-score and pyradiomics importable)."""
    try:
        radiomics.check_available()
    except HeartjobsError:
        return tuple(name for name in METRICS if REGISTRY[name].space != "radiomics")
    return METRICS


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """--metrics: metric names of the registry, comma-separated; None: available_metrics()."""
    if text is None:
        return available_metrics()
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


def _worse(a: float, b: float, better: str) -> bool:
    """Whether a scores strictly worse than b (NaN never does)."""
    return bool(a < b) if better == "higher" else bool(a > b)


def verdict(values: dict[str, float], question: str = "overall", better: str = "lower") -> dict:
    """One number's verdict from its value per rung (PASS_RULES[question]; `better` says which way is
    better), with what failed in words. Spearman's rho is oriented so that +1 is the question's order."""
    if question == "memorisation":
        raise ValueError("a memorisation verdict needs the flags: memorisation_verdict")
    order = QUESTION_RUNGS[question]
    if question == "diversity":
        pairs = list(zip(order[1:], order[:-1], strict=True))  # each rung worse than the one before it
    else:
        pairs = [(name, "held_out") for name in order[1:]]
        pairs += [(strong, weak) for weak, strong in SEVERITY_PAIRS if strong in order]

    def label(name: str) -> str:
        return "held-out real" if name == "held_out" else name

    # a tie is a failure too: a number saturated at its bound (precision 0 on both blurs) cannot rank them
    failures = [
        f"{a} ({values[a]:.4g}) not worse than {label(b)} ({values[b]:.4g}){' (tied)' * (values[a] == values[b])}"
        for a, b in pairs
        if not _worse(values[a], values[b], better)
    ]
    sign = -1.0 if better == "higher" else 1.0
    rho = spearman([sign * values[name] for name in order])
    return {"question": question, "better": better, "passes": not failures, "failures": failures, "spearman": rho}


def memorisation_verdict(values: dict[str, float], flags: dict[str, bool]) -> dict:
    """A memorisation number's verdict: flagged on the memorised rung, on no other (PASS_RULES)."""
    failures = [] if flags["memorised"] else [f"memorised not flagged ({values['memorised']:.4g} below threshold)"]
    failures += [
        f"{name} flagged ({values[name]:.4g} below threshold)" for name in flags if name != "memorised" and flags[name]
    ]
    passes = not failures
    return {"question": "memorisation", "better": "lower", "passes": passes, "failures": failures, "spearman": None}


def build_sets(prepared: PreparedSet, n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(the reference images, {rung name: its images}), n images each, from disjoint halves of the set. The
    degradations share one random stream in their order; a rung with its own stream (the rungs added
    later: memorised, half_modes) draws from (seed + 1, stream), so adding it changed no older rung."""
    if prepared.count < 4:
        raise HeartjobsError(f"{prepared.path}: {prepared.count} images; the ladder needs at least 4")
    if prepared.size % 8:
        raise HeartjobsError(f"{prepared.path}: image size {prepared.size}; the ladder's 8 x 8 patches need n x 8")
    n = min(n, prepared.count // 2)
    order = np.random.default_rng(seed).permutation(prepared.count)
    images = np.asarray(prepared.images)
    reference, held_out = images[np.sort(order[:n])], images[np.sort(order[n : 2 * n])]
    shared = np.random.default_rng(seed + 1)
    sets = {}
    for rung in RUNGS:
        rng = shared if rung.stream == 0 else np.random.default_rng([seed + 1, rung.stream])
        sets[rung.name] = rung.make(reference if rung.source == "reference" else held_out, rng)
    return reference, sets


def _own_protocol(metric: Metric, detail, options: Options) -> dict:
    """The part of a metric's protocol its compute reports (beside the feature space's): PRDC's k,
    MS-SSIM's scales, window and pairs, memorisation's baseline and rule; nothing for FID, KID and FRD."""
    if metric.name.startswith("prdc"):
        return {"k": options.prdc_k}
    if metric.name == "ms_ssim":
        return detail
    if metric.name.startswith("memorisation"):
        return detail["protocol"]
    return {}


def judge(number: Number, rungs: dict[str, dict]) -> dict:
    """A number's verdict on the rungs of its question, from every rung's values (its *_flag beside a
    memorisation number)."""
    values = {name: entry[number.key] for name, entry in rungs.items()}
    if number.question == "memorisation":
        return memorisation_verdict(values, {name: entry[f"{number.key}_flag"] for name, entry in rungs.items()})
    return verdict(values, number.question, number.better)


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
    features: str = "inception",
) -> dict:
    """Every rung measured by every metric against the reference (the training half); every number's
    value per rung, its verdict on its question's rungs, and the protocol of each metric."""
    started = time.perf_counter()
    device = device or torch.device("cpu")
    chosen = [REGISTRY[name] for name in metrics]
    if in_space(chosen, "radiomics"):
        radiomics.check_available()
    reference, sets = build_sets(prepared, n, seed)
    n = len(reference)
    options = Options(
        seed=seed,
        kid_subsets=1,  # one subset of all n for KID: every subset would be the whole set again
        kid_subset_size=n,
        ms_ssim_pairs=min(Options.ms_ssim_pairs, 5 * n),  # 2 x 11 sets: sized to n, the ladder stays fast
        device=str(device),
    )
    prdc_metrics = [m for m in chosen if m.name.startswith("prdc")]
    if prdc_metrics and n <= options.prdc_k:
        raise HeartjobsError(
            f"--n: {n} images per rung; {prdc_metrics[0].name}'s k = {options.prdc_k} nearest neighbours need "
            f"at least {options.prdc_k + 1}"
        )
    values: dict[str, dict] = {rung.name: {} for rung in RUNGS}
    protocol: dict[str, dict] = {}
    unmeasurable: list[str] = []  # said, and the values NaN (null in ladder.json): a failure where judged

    def measure(space_metrics: list[Metric], real, sides: dict, rung: str) -> None:
        # memorisation's baseline: the held-out half, real images the reference never held (the test)
        with_held_out = replace(options, held_out=sides["held_out"])
        for metric in space_metrics:
            try:
                entry, detail = metric.compute(real, sides[rung], with_held_out)
            except radiomics.FrdUnmeasurable as exc:  # FRD of the memorised rung: the reference itself
                values[rung] |= dict.fromkeys(metric.keys, math.nan)
                unmeasurable.append(f"{metric.name} on {rung}: {exc}")
                continue
            values[rung] |= entry
            if metric.name not in protocol:  # what the metric says of its own protocol, from the first rung
                protocol[metric.name] = _own_protocol(metric, detail, options)

    if in_space(chosen, "inception"):
        # the feature network's space: pytorch-fid's Inception, or RadImageNet's ResNet-50 from a user's file
        # (2048-d), loaded as the driver loads them (heartjobs.evaluation.driver.feature_network)
        # checked as `evaluate` checks the same options: one line naming the option (no RadImageNet file, dims)
        given = {"features": features, "weights": weights, "dims": dims, "batch_size": batch_size}
        options_named = {
            "features": "--features",
            "weights": "--weights",
            "dims": "--dims",
            "batch_size": "--batch-size",
        }
        settings = overridden(EvalSection(), given, options_named)
        extractor, inception = feature_network(settings, device)
        dims = extractor.dims

        def embed(images: np.ndarray, label: str) -> np.ndarray:
            tensor = torch.from_numpy(images).unsqueeze(1)
            chunks = (tensor[i : i + batch_size] for i in range(0, len(tensor), batch_size))
            return extractor.of_batches(chunks, len(tensor), label)

        real = Reference.of(embed(reference, "reference: network features"))
        sides = {rung.name: embed(sets[rung.name], f"{rung.name}: network features") for rung in RUNGS}
        for rung in RUNGS:
            measure(in_space(chosen, "inception"), real, sides, rung.name)
        space = {"weights": inception.describe(), "standard_weights": inception.standard, "dims": dims}
        space["network"] = features
        for metric in in_space(chosen, "inception"):
            protocol[metric.name] = space | protocol[metric.name]
    if in_space(chosen, "radiomics"):
        real_radiomics = radiomics.extract(reference, "reference: radiomic features", device=device)
        sides = {
            rung.name: radiomics.extract(sets[rung.name], f"{rung.name}: radiomic features", device=device)
            for rung in RUNGS
        }
        for rung in RUNGS:
            measure(in_space(chosen, "radiomics"), real_radiomics, sides, rung.name)
        space = {"version": radiomics.FRD_VERSION, "versions": radiomics.versions(radiomics.DEFAULT_BACKEND)}
        for metric in in_space(chosen, "radiomics"):
            protocol[metric.name] = space | protocol[metric.name]
    if in_space(chosen, "pixels"):
        for rung in RUNGS:
            measure(in_space(chosen, "pixels"), reference, sets, rung.name)
    warnings = []
    if in_space(chosen, "inception"):
        warnings += singular_warnings("inception", {"n": n}, dims)
    if in_space(chosen, "radiomics"):
        warnings += singular_warnings("radiomics", {"n": n}, radiomics.FEATURES_KEPT, approximate=True)
    for text in warnings + unmeasurable:
        console.print(f"warning: {text}")
    numbers = {number.key: (metric, number) for metric in chosen for number in metric.numbers}
    verdicts = {key: {"metric": metric.name, **judge(number, values)} for key, (metric, number) in numbers.items()}
    for key, result in verdicts.items():
        if not result["passes"]:
            console.print(
                f"warning: {key} fails the validity ladder ({result['question']}): {'; '.join(result['failures'])}"
            )
    return {
        "prepared": str(prepared.path),
        "content_hash": prepared.content_hash,
        "size": prepared.size,
        "n": n,
        "seed": seed,
        "metrics": list(metrics),
        "features": features,
        "numbers": list(numbers),
        "rungs": [{"name": r.name, "description": r.description, **values[r.name]} for r in RUNGS],
        "verdicts": verdicts,
        "pass_rules": dict(PASS_RULES),
        "question_rungs": {**{q: list(r) for q, r in QUESTION_RUNGS.items()}, "memorisation": [r.name for r in RUNGS]},
        "pass_rule": PASS_RULE,
        "warnings": warnings,
        "unmeasurable": unmeasurable,
        "protocol": protocol,
        "versions": library_versions(),
        "seconds": round(time.perf_counter() - started, 3),
    }
