"""Fréchet Radiomics Distance (FRD v1, Konz, Osuala et al.) between generated and real images, as the
metric's own package, frd-score, computes it, and the features that differ most.

FRD needs no network and no weights: pyradiomics extracts ~400 hand-crafted radiomic features per image
(first order, GLCM, GLRLM, GLSZM, NGTDM on the original and wavelet images, frd-score's 2D config: its
LoG filter needs 4 voxels in z, which a slice does not have),
both sets are z-scored with the real set's statistics, and FRD = log of the Fréchet distance between them.
Two backends compute the features. "torch" (the default) preprocesses each slice on the CPUs with
pyradiomics' own operations (SimpleITK, PyWavelets) and computes every feature class for a batch of slices
at once on the job's device (heartjobs.evaluation.radiomics_torch), equal to pyradiomics within 1e-9 per
column. "pyradiomics" runs frd-score's extractor itself, one slice per CPU: the reference. Either way the
slices go in as frd-score builds them from a PNG file (a float32 image of the 0..255 pixel values, spacing
1, the full-image mask minus one corner voxel), so the value equals `python -m frd_score REAL_DIR
GENERATED_DIR` on the same images saved as PNG (tests/test_frd.py, tests/test_radiomics_torch.py). The
real set's features are cached per (content, backend, versions).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from heartjobs import atomic
from heartjobs.choices import FrdBackend
from heartjobs.data.pool import ordered_map, worker_count
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_json
from heartjobs.progress import track
from heartjobs.store.prepared import PreparedSet

from .cache import cache_dir, load_arrays

if TYPE_CHECKING:  # torch is imported where the torch backend runs: a queue worker checks specs without it
    import torch

FRD_VERSION = "v1"
# About how many feature columns v1 keeps on CT-like 2D images (392-398 on the phantom at 32-256 px): fewer
# images than this make FRD's covariance singular.
FEATURES_KEPT = 390
CHUNK = 8  # images per task sent to a worker process: fewer round trips, still a smooth progress bar
DEFAULT_BACKEND: FrdBackend = "torch"
HOW_TO_INSTALL = (
    "install it with `make install` (scripts/install.sh builds pyradiomics 3.0.1 from source: "
    "pip install numpy setuptools wheel && pip install --no-build-isolation pyradiomics==3.0.1 && "
    "pip install frd-score==1.0.1), or set `[eval] frd = false`"
)


def check_available(backend: FrdBackend = DEFAULT_BACKEND) -> None:
    """Fail with one line saying how to install what the backend needs when it is missing: frd-score (its
    distance) and pyradiomics (the reference backend; SimpleITK and PyWavelets for both)."""
    try:
        import frd_score  # noqa: F401
        import pywt  # noqa: F401
        import SimpleITK  # noqa: F401

        if backend == "pyradiomics":
            import radiomics  # noqa: F401
    except Exception as exc:  # an ImportError, or a broken build failing on import
        raise HeartjobsError(f"FRD: frd-score/pyradiomics not importable ({exc}); {HOW_TO_INSTALL}") from None


def versions(backend: FrdBackend = DEFAULT_BACKEND) -> dict:
    """The packages an FRD value depends on, with the backend that computed its features (part of the
    real-feature cache key and of every record). The torch backend reproduces pyradiomics 3.0.1, so
    pyradiomics' version is named for it too."""
    names = {"frd_score": "frd-score", "pyradiomics": "pyradiomics", "simpleitk": "SimpleITK"}
    names |= {"pywavelets": "PyWavelets", "scipy": "scipy", "numpy": "numpy"}
    found = {"backend": backend}
    for key, dist in names.items():
        try:
            found[key] = md.version(dist)
        except md.PackageNotFoundError:  # the torch backend runs without pyradiomics installed
            found[key] = None
    if backend == "torch":
        found["torch"] = md.version("torch")
    return found


# --- features, in worker processes ---


@cache
def _extractor():
    """frd-score's v1 2D extractor (its own YAML config), built once per process, quiet."""
    from frd_score import frd
    from radiomics import setVerbosity

    setVerbosity(60)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return frd.get_feature_extractor(frd_version=FRD_VERSION, image_dim=2)


def _image_features(image: np.ndarray) -> tuple[list[str], list[float]]:
    """One H x W uint8 image's features (names, values), built as frd-score's process_image_mask_pair
    builds them from a PNG of it: image and mask as 1 x H x W with spacing 1; every radiomic feature
    ("original_" dropped from the name) and, as v1 keeps them, the numeric diagnostics."""
    import SimpleITK as sitk

    height, width = image.shape
    sitk_image = sitk.GetImageFromArray(image.astype(np.float32)[np.newaxis])
    sitk_image.SetSpacing((1.0, 1.0, 1.0))
    mask = np.ones((1, height, width), dtype=np.uint8)
    mask[0, 0, 0] = 0  # frd-score's workaround for a pyradiomics bug with all-ones masks
    sitk_mask = sitk.GetImageFromArray(mask)
    sitk_mask.SetSpacing((1.0, 1.0, 1.0))
    output = _extractor().execute(sitk_image, sitk_mask)
    names, values = [], []
    for name, value in output.items():
        if "diagnostics" not in name:
            names.append(name.replace("original_", ""))
            values.append(float(value))
            continue
        try:
            numeric = float(value)
        except (TypeError, ValueError):
            continue  # string and tuple diagnostics are not features
        names.append(name)
        values.append(numeric)
    return names, values


def _chunk_features(images: np.ndarray) -> tuple[list[str], list[list[float] | None]]:
    """Features of a chunk of images (N x H x W uint8): (names, a row per image). An image pyradiomics
    cannot process (a constant one: a collapsed generator, a blank slice) gives None, and counts as an
    image with NaN features, which frd-score's v1 drops."""
    rows, names = [], []
    for image in images:
        try:
            names, values = _image_features(image)
        except Exception:  # pyradiomics raises plain ValueErrors from deep inside on such images
            values = None
        rows.append(values)
    return names, rows


def _ignore_stop_signals() -> None:
    """In a worker: leave SIGINT/SIGTERM/SIGUSR2 to the parent, which stops between chunks and keeps what
    it finished; a worker killed by a signal would only turn that into a broken pool. Each worker is one
    of the CPUs the job was given, so SimpleITK (pyradiomics' image filters) runs one thread in it, not
    one per core of the machine."""
    import signal

    import SimpleITK as sitk

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


@dataclass
class RadiomicFeatures:
    names: list[str]
    values: np.ndarray  # N x F, float64, raw (not normalized)


def extract(
    images: np.ndarray,
    label: str,
    workers: int | None = None,
    poll: Callable[[], None] | None = None,
    *,
    backend: FrdBackend = DEFAULT_BACKEND,
    device: torch.device | None = None,
) -> RadiomicFeatures:
    """Radiomic features of N x H x W (or N x 1 x H x W) uint8 images, with progress; poll() between
    chunks (a stop request raises there, cancelling the chunks not begun). torch: preprocessing on the CPUs
    this process was given, features in batches on `device` (the CPU when None); pyradiomics: everything
    on those CPUs."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"FRD: expected N x H x W uint8 images, got {images.shape} {images.dtype}")
    check_available(backend)
    if backend == "torch":
        import torch

        return _extract_torch(images, label, workers, poll, device or torch.device("cpu"))
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
    names: list[str] = []
    rows: list[list[float] | None] = []
    count = worker_count(workers, len(chunks))
    if count == 1:  # in this process: SimpleITK's threads too follow the one CPU it was given
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    pool = ordered_map(count, initializer=_ignore_stop_signals)
    with track(label, len(images)) as advance, pool as pmap:
        for chunk_names, chunk_rows in pmap(_chunk_features, chunks):
            if names and chunk_names and chunk_names != names:
                raise HeartjobsError("FRD: pyradiomics returned different features for different images")
            names = names or chunk_names
            rows.extend(chunk_rows)
            advance(len(chunk_rows))
            if poll:
                poll()
    if not names:
        raise FrdUnmeasurable(_no_features(len(images), label))
    failed = np.full(len(names), np.nan)
    return RadiomicFeatures(names, np.array([failed if row is None else row for row in rows], dtype=np.float64))


def _no_features(count: int, label: str) -> str:
    return (
        f"FRD unmeasurable: none of the {count} images has radiomic features ({label}): pyradiomics cannot "
        "process a constant image (a collapsed generator?)"
    )


def _prepare_chunk(images: np.ndarray) -> list:
    """In a worker: pyradiomics' preprocessing of each slice of a chunk (radiomics_torch.preprocessing)."""
    from .radiomics_torch.preprocessing import prepare

    return [prepare(image) for image in images]


def _features_chunk(images: np.ndarray) -> np.ndarray:
    """In a worker (CPU): a chunk's preprocessing and its features, batched on this worker's one CPU."""
    import torch

    from .radiomics_torch.extraction import features_of

    return features_of(_prepare_chunk(images), torch.device("cpu"))


def _torch_worker() -> None:
    """A torch-backend worker: stop signals left to the parent (as _ignore_stop_signals says), and one
    thread for SimpleITK and torch each: the worker is one of the CPUs the job was given."""
    import torch

    _ignore_stop_signals()
    torch.set_num_threads(1)


def _extract_torch(
    images: np.ndarray, label: str, workers: int | None, poll: Callable[[], None] | None, device: torch.device
) -> RadiomicFeatures:
    """The torch backend. On the CPU each worker process preprocesses a chunk of slices and computes their
    features, batched, on its own CPU (one torch thread each: small batched kernels scale across processes
    better than across threads). On a GPU the workers preprocess (SimpleITK, PyWavelets: CPU work) and the
    features of a batch are computed here on the device while the workers prepare the next."""
    from .radiomics_torch import extraction

    per_batch = extraction.batch_size(images.shape[1], images.shape[2], device)
    on_cpu = device.type == "cpu"
    count = worker_count(workers, max(1, len(images) // 4))
    chunk = max(1, min(per_batch // 2, -(-len(images) // (2 * count)))) if on_cpu else max(1, min(16, per_batch // 4))
    chunks = [images[i : i + chunk] for i in range(0, len(images), chunk)]
    count = min(count, len(chunks))
    rows: list[np.ndarray] = []
    waiting: list = []
    if count == 1:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    pool = ordered_map(count, initializer=_torch_worker)
    with track(label, len(images)) as advance, pool as pmap:
        if on_cpu:
            for done in pmap(_features_chunk, chunks):
                rows.append(done)
                advance(len(done))
                if poll:
                    poll()
        else:
            for index, prepared in enumerate(pmap(_prepare_chunk, chunks)):
                waiting.extend(prepared)
                if len(waiting) >= per_batch or index == len(chunks) - 1:
                    rows.append(extraction.features_of(waiting, device))
                    advance(len(waiting))
                    waiting = []
                if poll:
                    poll()
    values = np.concatenate(rows) if rows else np.zeros((0, len(extraction.feature_names())))
    if np.isnan(values).all(axis=1).all():
        raise FrdUnmeasurable(_no_features(len(images), label))
    return RadiomicFeatures(list(extraction.feature_names()), values)


# --- the real set, cached ---


@dataclass
class RealRadiomics:
    features: RadiomicFeatures
    path: Path
    cached: bool


def real_features(
    prepared: PreparedSet,
    n_real: int,
    workers: int | None = None,
    poll: Callable[[], None] | None = None,
    *,
    backend: FrdBackend = DEFAULT_BACKEND,
    device: torch.device | None = None,
) -> RealRadiomics:
    """The first n_real real images' features, from the cache or extracted once and cached atomically.
    The key: the set's content, n_real, the FRD version, the backend and the versions of every package
    involved (not the device: CPU and GPU agree within 1e-9)."""
    key = sha256_json(
        {"content_hash": prepared.content_hash, "n_real": n_real, "frd": FRD_VERSION, "versions": versions(backend)}
    )[:20]
    path = cache_dir() / "frd_features" / f"real_{key}.npz"
    cached = load_arrays(path, ("names", "values"))
    if cached is not None:
        return RealRadiomics(RadiomicFeatures(list(cached["names"]), cached["values"]), path, True)
    label = f"real radiomic features ({n_real})"
    features = extract(prepared.images[:n_real], label, workers, poll, backend=backend, device=device)
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, names=np.array(features.names), values=features.values)
    return RealRadiomics(features, path, False)


# --- the distance ---


@dataclass
class FrdResult:
    frd: float
    n_real: int  # images left after frd-score's v1 drops those with a NaN feature
    n_generated: int
    features_used: int  # feature columns left after it drops those that are NaN/Inf once normalized
    shift: np.ndarray  # per feature used: mean of the generated set, in standard deviations of the real set
    names: list[str]
    degenerate_dropped: int = 0  # columns left out by drop_degenerate (0 when it is off)


class FrdUnmeasurable(HeartjobsError):
    """Two sets FRD gives no finite number for (identical or degenerate sets, too few images for the
    features kept): the reason, never a -inf or NaN value."""


# drop_degenerate's rule: a column that varies, but whose real-set values are all round-off (|x| <= 1e-9: the images are
# normalised to a scale of 100, so every genuine feature lies many orders of magnitude above), or whose
# real-set spread is round-off of its size (std <= 1e-9 x max |x|). FRD v1 keeps such columns, and its
# z-scoring turns their round-off into O(1) values (three wavelet Means; docs/evaluation.md).
DEGENERATE_ABSOLUTE = 1e-9
DEGENERATE_RELATIVE = 1e-9


def degenerate_columns(real: np.ndarray) -> np.ndarray:
    """Which columns of the real set's features (N x F, NaN rows left out) drop_degenerate drops: those
    that vary, but only by round-off. (A column that does not vary at all FRD v1 drops itself: its
    z-scores are NaN.)"""
    largest = np.abs(real).max(axis=0)
    spread = real.std(axis=0)
    return (spread > 0) & ((largest <= DEGENERATE_ABSOLUTE) | (spread <= DEGENERATE_RELATIVE * largest))


def frechet_radiomics_distance(
    real: RadiomicFeatures, generated: RadiomicFeatures, drop_degenerate: bool = False
) -> FrdResult:
    """FRD v1 exactly as frd-score computes it (its calculate_feature_statistics and compute_frd, with its
    own normalisation and distance functions): rows with a NaN dropped, float32, z-scored with the real
    set's mean and std, columns with NaN/Inf dropped, Fréchet distance, natural log. drop_degenerate first
    leaves out the columns degenerate_columns names (not comparable to published FRD values). Raises
    FrdUnmeasurable, with the reason, where the log of the distance is not a finite number."""
    from frd_score import frd

    if real.names != generated.names:
        raise HeartjobsError("FRD: the real and generated feature lists differ (different pyradiomics settings?)")
    sets = [x[~np.isnan(x).any(axis=1)] for x in (real.values, generated.values)]
    for label, kept, given in zip(("real", "generated"), sets, (real.values, generated.values), strict=True):
        if len(kept) < 2:
            raise FrdUnmeasurable(
                f"FRD unmeasurable: fewer than 2 images with finite features in the {label} set ({len(kept)} of "
                f"{len(given)}; the others are constant)"
            )
    columns = np.ones(sets[0].shape[1], bool)
    if drop_degenerate:
        columns = ~degenerate_columns(sets[0])
    sets = [s[:, columns].astype(np.float32) for s in sets]
    normalized = [
        frd.z_score_normalize(s, 0, 1, base_distribution=sets[0], replace_nan=False, handle_std_zero=False)
        for s in sets
    ]
    keep = ~np.logical_or.reduce([~np.isfinite(n).all(axis=0) for n in normalized])
    normalized = [n[:, keep] for n in normalized]
    mus = [np.mean(n, axis=0) for n in normalized]
    sigmas = [np.cov(n, rowvar=False) for n in normalized]
    squared = frd.calculate_frechet_distance(mus[0], sigmas[0], mus[1], sigmas[1])
    if not (np.isfinite(squared) and squared > 0):
        raise FrdUnmeasurable(_why_unmeasurable(float(squared), normalized, sigmas))
    names = [name for name, c in zip(real.names, columns, strict=True) if c]
    names = [name for name, k in zip(names, keep, strict=True) if k]
    return FrdResult(
        float(np.log(squared)),
        len(sets[0]),
        len(sets[1]),
        int(keep.sum()),
        mus[1].astype(np.float64),
        names,
        int((~columns).sum()),
    )


def _why_unmeasurable(squared: float, normalized: list[np.ndarray], sigmas: list[np.ndarray]) -> str:
    """One line: why the squared distance has no finite log, with the sizes and covariance ranks."""
    features = normalized[0].shape[1]
    ranks = [int(np.linalg.matrix_rank(np.atleast_2d(s))) for s in sigmas]
    if len(normalized[0]) == len(normalized[1]) and np.array_equal(normalized[0], normalized[1]):
        cause = "the two sets have the same features (identical images?), a distance of 0"
    elif np.isfinite(squared):
        cause = f"the squared distance is {squared:.3g}: round-off around 0, the sets are (near-)identical"
    else:
        cause = f"the squared distance is {squared:.3g}, whose log is not a finite number"
    return (
        f"FRD unmeasurable: {cause}; n_real={len(normalized[0])}, n_generated={len(normalized[1])} against "
        f"{features} features, covariance ranks {ranks[0]} (real) and {ranks[1]} (generated)"
    )


def top_differences(results: list[FrdResult], count: int = 10) -> list[dict]:
    """The features whose generated mean lies furthest from the real mean (frd-score's interpretability
    ranking: the squared difference of the normalised means), averaged over repeats, signed."""
    names = results[0].names
    if any(r.names != names for r in results):  # a repeat dropped other columns: rank what all share
        shared = set.intersection(*(set(r.names) for r in results))
        names = [n for n in names if n in shared]
    shift = np.mean([[dict(zip(r.names, r.shift, strict=True))[n] for n in names] for r in results], axis=0)
    order = np.argsort(-(shift**2))[:count]
    return [{"feature": names[i], "shift_sd": round(float(shift[i]), 4)} for i in order]


def describe_difference(entry: dict) -> str:
    """'lower glcm_Contrast (-1.8 sd)': how generated slices differ from real ones in one feature."""
    direction = "higher" if entry["shift_sd"] > 0 else "lower"
    return f"{direction} {entry['feature']} ({entry['shift_sd']:+.2f} sd)"
