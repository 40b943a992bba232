"""Cost of issue 31's metrics (PRDC, MS-SSIM diversity, memorisation, RadImageNet features) at the thesis'
sizes and at the smoke jobs' sizes, each beside another way of doing the same work where there is one.

Sizes (the [eval] defaults and the jobs' own): the thesis, 3307 real slices, 3 x 3000 generated images,
frd_n 1000, 2048-d features; jobs/smoke/*.toml, 200 phantom slices at 64 px, 2 x 200 generated, frd_n 100,
192-d; jobs/smoke-study.sweep.toml, 200 slices at 32 px, 1 x 100 generated, frd_n 50, 64-d. Every row is
one repeat's work (the driver runs it once per repeat).

- PRDC (heartjobs.evaluation.manifold.prdc, chunked) against prdc 0.2's compute_prdc on the same features
  (synthetic Gaussian features, float64 as the feature networks give them; all n_generated vs n_real).
- PRDC in the radiomic space (prdc_radiomics: z-scoring as FRD does, then prdc) against radiomic_space +
  compute_prdc; synthetic radiomic features, 398 columns on scales from 1e-3 to 1e6 as FRD v1's are, 8 of
  them constant (FRD v1's mask counts), frd_n generated vs n_real.
- MS-SSIM diversity (ms_ssim_diversity: ms_ssim_pairs pairs of generated and as many of real images, the
  pairs as channels of one image) against pytorch_msssim.ms_ssim called once per pair on the same pairs,
  and (--msssim-batched) its own batched call (N x 1 x H x W); pytorch_msssim refuses images under 161 px,
  so below that heartjobs' figure stands alone. Phantom slices (bench_frd.phantom_images); the cost
  depends on the pairs, not on how many images they are drawn from.
- Memorisation (memorisation.memorisation: the generated images' nearest training slice and the
  leave-one-out baseline, the training set's nearest other slice, in one call) in pixels, in the 2048-d
  (smoke: 192-d) feature space and in the radiomic space; its nearest-neighbour search alone against scipy's
  cdist + argmin on the same rows (at 256 px on the first --naive-queries queries against the first
  --naive-training slices: cdist converts everything to float64 and is not BLAS, minutes at full size).
  Pixel sets: phantom slices cycled with Gaussian noise (sd 8 grey levels), uint8.
- Features per 100 images: RadImageNet's ResNet-50 (224 px input; an untrained torchvision resnet50
  state_dict saved to a file, as tests/test_radimagenet.py builds one: the cost does not depend on the
  weights) against pytorch-fid's Inception (299 px input, 2048-d, untrained weights).

Prints a table; appends one JSON line per row to bench/results/metrics.jsonl. --quick: the smoke sizes only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_frd import phantom_images
from results_log import RESULTS, record
from scipy.spatial.distance import cdist

from heartjobs.evaluation import radimagenet
from heartjobs.evaluation.diversity import draw_pairs, ms_ssim_diversity, settings_for
from heartjobs.evaluation.inception import FeatureExtractor as InceptionFeatures
from heartjobs.evaluation.manifold import prdc, prdc_radiomics, radiomic_space
from heartjobs.evaluation.memorisation import memorisation, nearest_neighbours
from heartjobs.evaluation.weights import resolve_weights

# (name, n_real, n_generated per repeat, frd_n, feature dims, image size of its set, repeats)
SCALES = {
    "thesis": dict(n_real=3307, n_generated=3000, frd_n=1000, dims=2048, size=256, repeats=3),
    "smoke": dict(n_real=200, n_generated=200, frd_n=100, dims=192, size=64, repeats=2),
    "study-smoke": dict(n_real=200, n_generated=100, frd_n=50, dims=64, size=32, repeats=1),
}
RADIOMIC_COLUMNS = 398  # FRD v1 on a 2-D slice (docs/evaluation.md)
CONSTANT_COLUMNS = 8
PAIRS = 1000  # [eval] ms_ssim_pairs default
K = 5  # [eval] prdc_k default

PARTS = ("prdc", "ms-ssim", "memorisation", "features")
ROWS: list[dict] = []


def timed(fn: Callable, *args, runs: int = 1, **kwargs) -> tuple[object, float]:
    """fn's result and its time: the fastest of `runs` calls (more than one only for sub-second work, after
    one call not timed: the first call of a small one is mostly set-up)."""
    best = float("inf")
    if runs > 1:
        fn(*args, **kwargs)
    for _ in range(runs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return result, best


def quiet(fn: Callable) -> Callable:
    """fn with its stdout swallowed (compute_prdc prints a line per call)."""

    def call(*args, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):
            return fn(*args, **kwargs)

    return call


def row(metric: str, scale: str, what: str, seconds: float, other: str = "", other_s: float | None = None, **info):
    """One measured row: printed, kept for the table, and appended to bench/results/metrics.jsonl."""
    line = {"metric": metric, "scale": scale, "what": what, "seconds": round(seconds, 4)}
    if other_s is not None:
        line |= {"other_way": other, "other_seconds": round(other_s, 4), "ratio": round(other_s / seconds, 2)}
    # the machine is shared: the load says whether others ran beside this row
    line |= info | {"load_1min": round(os.getloadavg()[0], 2)}
    ROWS.append(line)
    ratio = f"  {other}: {other_s:.3f} s, ratio {other_s / seconds:.2f}x" if other_s is not None else ""
    load = f"  (load {os.getloadavg()[0]:.1f})"
    print(f"{metric:<23} {scale:<11} {what:<62} {seconds:8.3f} s{ratio}{load}", flush=True)
    record("metrics", line)


# --- synthetic inputs ---


def gaussian_features(n: int, dims: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, (n, dims))


def radiomic_features(n: int, seed: int) -> np.ndarray:
    """n x 398 raw radiomic-like values: columns on scales 1e-3..1e6, a few of them constant."""
    rng = np.random.default_rng(seed)
    scales = np.exp(np.random.default_rng(99).uniform(np.log(1e-3), np.log(1e6), RADIOMIC_COLUMNS))
    values = scales * (1.0 + 0.3 * rng.standard_normal((n, RADIOMIC_COLUMNS)))
    # the same in every image, small whole numbers as the mask counts are (a float32 mean of them is exact)
    values[:, :CONSTANT_COLUMNS] = 100 * np.arange(1, CONSTANT_COLUMNS + 1)
    return values


def noisy_slices(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n uint8 images: the base slices cycled, each with its own Gaussian noise (sd 8 grey levels)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, *base.shape[1:]), np.uint8)
    for start in range(0, n, len(base)):
        part = base[: min(len(base), n - start)].astype(np.float32)
        part += rng.normal(0, 8, part.shape).astype(np.float32)
        out[start : start + len(part)] = np.clip(np.rint(part), 0, 255)
    return out


# --- the metrics ---


def bench_prdc(scale: str, n_real: int, n_generated: int, dims: int) -> None:
    real = gaussian_features(n_real, dims, seed=1)
    generated = gaussian_features(n_generated, dims, seed=2, shift=0.05)
    runs = 1 if n_real * n_generated * dims > 1e8 else 5
    ours, ours_s = timed(prdc, real, generated, K, runs=runs)
    theirs, theirs_s = timed(quiet(compute_prdc), real, generated, K, runs=runs)
    names = ("precision", "recall", "density", "coverage")
    difference = max(abs(ours[m] - float(theirs[m])) for m in names)
    row(
        "PRDC, features",
        scale,
        f"{n_generated} gen vs {n_real} real, {dims}-d, k {K}",
        ours_s,
        "prdc.compute_prdc",
        theirs_s,
        n_real=n_real,
        n_generated=n_generated,
        dims=dims,
        k=K,
        largest_difference=difference,
    )


def bench_prdc_radiomics(scale: str, n_real: int, frd_n: int) -> None:
    real, generated = radiomic_features(n_real, seed=3), radiomic_features(frd_n, seed=4)
    runs = 1 if n_real * frd_n > 1e6 else 5
    ours, ours_s = timed(prdc_radiomics, real, generated, K, runs=runs)

    def reference():
        real_z, generated_z, _ = radiomic_space(real, generated)
        return quiet(compute_prdc)(real_z, generated_z, K)

    theirs, theirs_s = timed(reference, runs=runs)
    difference = max(abs(ours[m] - float(theirs[m])) for m in ("precision", "recall", "density", "coverage"))
    row(
        "PRDC, radiomics",
        scale,
        f"{frd_n} gen vs {n_real} real, {ours['features_used']} of {RADIOMIC_COLUMNS} cols z-scored",
        ours_s,
        "radiomic_space + compute_prdc",
        theirs_s,
        n_real=n_real,
        n_generated=frd_n,
        dims=ours["features_used"],
        k=K,
        largest_difference=difference,
    )


def reference_ms_ssim(images: torch.Tensor, pairs: int, stream: int, batch: int | None) -> float:
    """Mean pytorch_msssim.ms_ssim over the pairs ms_ssim_diversity draws (seed 0, this stream), one call per
    pair (batch None) or per `batch` pairs as N x 1 x H x W."""
    from pytorch_msssim import ms_ssim

    i, j, _ = draw_pairs(len(images), pairs, np.random.default_rng([0, stream]))
    x = images.float()
    if batch is None:
        values = [float(ms_ssim(x[a : a + 1], x[b : b + 1], data_range=255)) for a, b in zip(i, j, strict=True)]
        return float(np.mean(values))
    values = [
        ms_ssim(x[i[s : s + batch]], x[j[s : s + batch]], data_range=255, size_average=False)
        for s in range(0, len(i), batch)
    ]
    return float(torch.cat(values).double().mean())


def bench_ms_ssim(scale: str, size: int, n: int, batched: bool) -> None:
    generated = torch.from_numpy(phantom_images(size, n, seed=6))[:, None]
    real = torch.from_numpy(phantom_images(size, n, seed=5))[:, None]
    ms_ssim_diversity(generated, real, pairs=8)  # warm-up
    runs = 1 if size >= 128 else 5
    ours, ours_s = timed(ms_ssim_diversity, generated, real, pairs=PAIRS, runs=runs)
    settings = settings_for(size, size)
    what = f"{PAIRS} pairs x 2 sets of {n}, {size} px, {settings['scales']} scales"
    info = dict(pairs=PAIRS, sets=2, n=n, size=size, scales=settings["scales"])
    if size <= 160:  # pytorch_msssim.ms_ssim asserts the smaller side > (11 - 1) * 2**4
        row("MS-SSIM diversity", scale, what, ours_s, **info)
        return

    def per_pair():
        return reference_ms_ssim(generated, PAIRS, 0, None), reference_ms_ssim(real, PAIRS, 1, None)

    (gen, ref), theirs_s = timed(per_pair)
    difference = max(abs(ours["ms_ssim_generated"] - gen), abs(ours["ms_ssim_real"] - ref))
    row(
        "MS-SSIM diversity",
        scale,
        what,
        ours_s,
        "pytorch_msssim, per pair",
        theirs_s,
        **info,
        mean_difference=difference,
    )
    if batched:
        _, batched_s = timed(
            lambda: (reference_ms_ssim(generated, PAIRS, 0, 64), reference_ms_ssim(real, PAIRS, 1, 64))
        )
        row("MS-SSIM diversity", scale, what, ours_s, "pytorch_msssim, 64 pairs a call", batched_s, **info)


def naive_nearest(queries: np.ndarray, references: np.ndarray, leave_one_out: bool) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward way: the whole distance matrix by scipy's cdist (float64), then argmin."""
    d = cdist(queries.reshape(len(queries), -1).astype(np.float64), references.reshape(len(references), -1))
    if leave_one_out:
        np.fill_diagonal(d, np.inf)
    index = d.argmin(axis=1)
    return index, d[np.arange(len(d)), index]


def bench_memorisation(
    scale: str, space: str, generated: np.ndarray, training: np.ndarray, naive_queries: int, naive_training: int
) -> None:
    dims = int(np.prod(generated.shape[1:]))
    what = f"{len(generated)} gen vs {len(training)} train + LOO, {dims}-d"
    if generated.ndim == 3:
        what += f" ({generated.shape[1]} px)"
    runs = 1 if len(training) ** 2 * dims > 1e9 else 5
    result, whole_s = timed(memorisation, generated, training, None, space=space, runs=runs)
    row(
        "memorisation",
        scale,
        f"{space}: {what}",
        whole_s,
        n_generated=len(generated),
        n_training=len(training),
        dims=dims,
        space=space,
        fraction_below=result["fraction_below"],
    )
    # the search alone, on rows cdist can hold in float64: every row, or the first ones at 256 px
    q, r = generated[:naive_queries], training[:naive_training]
    (index, distance), ours_s = timed(nearest_neighbours, q, r, runs=runs)
    (naive_index, naive_distance), naive_s = timed(naive_nearest, q, r, False, runs=runs)
    row(
        "nearest neighbours",
        scale,
        f"{space}: {len(q)} queries vs {len(r)}, {dims}-d",
        ours_s,
        "scipy cdist + argmin",
        naive_s,
        n_queries=len(q),
        n_references=len(r),
        dims=dims,
        space=space,
        same_neighbour=float((index == naive_index).mean()),
        largest_relative_difference=float(
            np.max(np.abs(distance - naive_distance) / np.maximum(naive_distance, 1e-12))
        ),
    )


def bench_features(size: int, n: int, batch: int, weights_dir: Path) -> None:
    images = torch.from_numpy(phantom_images(size, n, seed=5))[:, None]
    path = weights_dir / "resnet50_untrained.pt"
    if not path.exists():
        from torchvision.models import resnet50

        torch.manual_seed(0)
        torch.save(resnet50(weights=None).state_dict(), path)
    cpu = torch.device("cpu")
    resnet = radimagenet.FeatureExtractor(radimagenet.resolve_weights(path), cpu, batch)
    inception = InceptionFeatures(resolve_weights("untrained"), 2048, cpu, batch)
    seconds = {}
    for name, extractor in (("radimagenet", resnet), ("inception", inception)):
        extractor(images[:2])  # warm-up
        _, seconds[name] = timed(lambda e=extractor: [e(images[s : s + batch]) for s in range(0, n, batch)])
    per_100 = {name: s * 100 / n for name, s in seconds.items()}
    row(
        "features per 100 images",
        "-",
        f"RadImageNet ResNet-50, {n} slices of {size} px -> 224 px, batch {batch}",
        per_100["radimagenet"],
        "Inception 2048-d, 299 px",
        per_100["inception"],
        n=n,
        size=size,
        batch=batch,
        threads=torch.get_num_threads(),
    )


def compute_prdc(real, generated, k):
    from prdc import compute_prdc as reference

    return reference(real, generated, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke jobs' sizes only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="image sizes at the thesis' counts")
    parser.add_argument("--naive-queries", type=int, default=100, help="cdist's queries at 256 px")
    parser.add_argument("--naive-training", type=int, default=1000, help="cdist's training slices at 256 px")
    parser.add_argument("--features-n", type=int, default=100, help="images per feature-extraction timing")
    parser.add_argument("--batch", type=int, default=50, help="feature-extraction batch (the smoke jobs' 50)")
    parser.add_argument("--msssim-batched", action="store_true", help="also pytorch_msssim's batched call")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS, help="these parts alone")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, torch {torch.__version__} with {torch.get_num_threads()} threads; seconds per repeat")

    scales = ["smoke", "study-smoke"] if args.quick else ["thesis", "smoke", "study-smoke"]
    for scale in scales:
        s = SCALES[scale]
        sizes = args.sizes if scale == "thesis" else [s["size"]]
        if "prdc" in args.only:
            bench_prdc(scale, s["n_real"], s["n_generated"], s["dims"])
            bench_prdc_radiomics(scale, s["n_real"], s["frd_n"])
        for size in sizes if "ms-ssim" in args.only else []:
            bench_ms_ssim(scale, size, min(s["frd_n"], 200), args.msssim_batched)
        if "memorisation" not in args.only:
            continue
        for size in sizes:
            base_training = phantom_images(size, min(s["n_real"], 200), seed=5)
            base_generated = phantom_images(size, min(s["frd_n"], 200), seed=6)
            training = noisy_slices(base_training, s["n_real"], seed=7)
            generated = noisy_slices(base_generated, s["frd_n"], seed=8)
            subset = size >= 256
            bench_memorisation(
                scale,
                "pixels",
                generated,
                training,
                args.naive_queries if subset else len(generated),
                args.naive_training if subset else len(training),
            )
            del training, generated
        features = (gaussian_features(s["n_real"], s["dims"], 1), gaussian_features(s["frd_n"], s["dims"], 2, 0.05))
        bench_memorisation(scale, f"features-{s['dims']}", features[1], features[0], s["frd_n"], s["n_real"])
        real_z, generated_z, _ = radiomic_space(radiomic_features(s["n_real"], 3), radiomic_features(s["frd_n"], 4))
        bench_memorisation(
            scale, "radiomics", generated_z.astype(np.float64), real_z.astype(np.float64), s["frd_n"], s["n_real"]
        )

    if "features" not in args.only:
        return
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        for size in [64] if args.quick else args.sizes:
            bench_features(size, args.features_n, args.batch, Path(tmp))


if __name__ == "__main__":
    main()
