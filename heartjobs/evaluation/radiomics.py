"""Fréchet Radiomics Distance (FRD v1, Konz, Osuala et al.) between generated and real images, as the
metric's own package, frd-score, computes it, and the features that differ most.

FRD needs no network and no weights: pyradiomics extracts ~400 hand-crafted radiomic features per image
(first order, GLCM, GLRLM, GLSZM, NGTDM on the original, LoG and wavelet images, frd-score's 2D config),
both sets are z-scored with the real set's statistics, and FRD = log of the Fréchet distance between them.
Images go to pyradiomics in memory exactly as frd-score builds them from a PNG file (a float32 image of
the 0..255 pixel values, spacing 1, the full-image mask minus one corner voxel), so the value equals
`python -m frd_score REAL_DIR GENERATED_DIR` on the same images saved as PNG (tests/test_frd.py).
Extraction runs on all cores; the real set's features are cached per (content, settings, versions).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from heartjobs import atomic
from heartjobs.data.pool import ordered_map, worker_count
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_json
from heartjobs.progress import track
from heartjobs.store.prepared import PreparedSet

from .cache import cache_dir

FRD_VERSION = "v1"
# About how many feature columns v1 keeps on CT-like 2D images (392-398 on the phantom at 32-256 px): fewer
# images than this make FRD's covariance singular.
FEATURES_KEPT = 390
CHUNK = 8  # images per task sent to a worker process: fewer round trips, still a smooth progress bar
HOW_TO_INSTALL = (
    "install it with `make install` (scripts/install.sh builds pyradiomics 3.0.1 from source: "
    "pip install numpy setuptools wheel && pip install --no-build-isolation pyradiomics==3.0.1 && "
    "pip install frd-score==1.0.1), or set `[eval] frd = false`"
)


def check_available() -> None:
    """Fail with one line saying how to install frd-score and pyradiomics when either is missing."""
    try:
        import frd_score  # noqa: F401
        import radiomics  # noqa: F401
    except Exception as exc:  # an ImportError, or a broken build failing on import
        raise HeartjobsError(f"FRD: frd-score/pyradiomics not importable ({exc}); {HOW_TO_INSTALL}") from None


def versions() -> dict:
    """The packages an FRD value depends on (part of the real-feature cache key and of every record)."""
    names = {"frd_score": "frd-score", "pyradiomics": "pyradiomics", "simpleitk": "SimpleITK"}
    names |= {"pywavelets": "PyWavelets", "scipy": "scipy", "numpy": "numpy"}
    return {key: md.version(dist) for key, dist in names.items()}


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
    images: np.ndarray, label: str, workers: int | None = None, poll: Callable[[], None] | None = None
) -> RadiomicFeatures:
    """Radiomic features of N x H x W (or N x 1 x H x W) uint8 images, on the CPUs this process was given,
    with progress; poll() between chunks (a stop request raises there, cancelling the chunks not begun)."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"FRD: expected N x H x W uint8 images, got {images.shape} {images.dtype}")
    check_available()
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
        raise HeartjobsError(f"FRD: pyradiomics could not process any of the {len(images)} images ({label})")
    failed = np.full(len(names), np.nan)
    return RadiomicFeatures(names, np.array([failed if row is None else row for row in rows], dtype=np.float64))


# --- the real set, cached ---


@dataclass
class RealRadiomics:
    features: RadiomicFeatures
    path: Path
    cached: bool


def real_features(
    prepared: PreparedSet, n_real: int, workers: int | None = None, poll: Callable[[], None] | None = None
) -> RealRadiomics:
    """The first n_real real images' features, from the cache or extracted once and cached atomically.
    The key: the set's content, n_real, the FRD version and the versions of every package involved."""
    key = sha256_json(
        {"content_hash": prepared.content_hash, "n_real": n_real, "frd": FRD_VERSION, "versions": versions()}
    )[:20]
    path = cache_dir() / "frd_features" / f"real_{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return RealRadiomics(RadiomicFeatures(list(cached["names"]), cached["values"]), path, True)
    features = extract(prepared.images[:n_real], f"real radiomic features ({n_real})", workers, poll)
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


def frechet_radiomics_distance(real: RadiomicFeatures, generated: RadiomicFeatures) -> FrdResult:
    """FRD v1 exactly as frd-score computes it (its calculate_feature_statistics and compute_frd, with its
    own normalisation and distance functions): rows with a NaN dropped, float32, z-scored with the real
    set's mean and std, columns with NaN/Inf dropped, Fréchet distance, natural log."""
    from frd_score import frd

    if real.names != generated.names:
        raise HeartjobsError("FRD: the real and generated feature lists differ (different pyradiomics settings?)")
    sets = [x[~np.isnan(x).any(axis=1)].astype(np.float32) for x in (real.values, generated.values)]
    if min(len(s) for s in sets) < 2:
        raise HeartjobsError("FRD: fewer than 2 images with finite features in a set")
    normalized = [
        frd.z_score_normalize(s, 0, 1, base_distribution=sets[0], replace_nan=False, handle_std_zero=False)
        for s in sets
    ]
    keep = ~np.logical_or.reduce([~np.isfinite(n).all(axis=0) for n in normalized])
    normalized = [n[:, keep] for n in normalized]
    mus = [np.mean(n, axis=0) for n in normalized]
    sigmas = [np.cov(n, rowvar=False) for n in normalized]
    squared = frd.calculate_frechet_distance(mus[0], sigmas[0], mus[1], sigmas[1])
    value = float(np.log(squared)) if squared > 0 else float("-inf")
    names = [name for name, k in zip(real.names, keep, strict=True) if k]
    return FrdResult(value, len(sets[0]), len(sets[1]), int(keep.sum()), mus[1].astype(np.float64), names)


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
