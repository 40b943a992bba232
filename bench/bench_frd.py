"""FRD benchmark: the torch backend against pyradiomics, the same images, at 64 and 256 px.

Three ways to the same FRD v1 features, side by side in one run: pyradiomics itself in one process (one
image at a time, one thread: what one CPU of any machine gives), pyradiomics on all cores (heartjobs'
pyradiomics backend, a process per core), and the torch backend (preprocessing with SimpleITK in the
worker processes, every feature class batched on the device: the CPU here, and a CUDA GPU too when there
is one). Printed: features per second of each, the ratios, the largest column difference between the
backends, FRD by each, and from the rates the time of a thesis job's FRD (3 x 1000 generated images) and
of the 3,307 real slices. Appends one JSON line per size and device to bench/results/frd.jsonl.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from results_log import record

from heartjobs.data.phantom import Phantom, PhantomParams
from heartjobs.evaluation import radiomics

# A thesis job's FRD: 3 repeats x frd_n 1000 generated images; the real set (3307 slices) once per set.
THESIS_FRD_IMAGES = 3 * 1000
THESIS_REAL = 3307


def phantom_images(size: int, count: int, seed: int) -> np.ndarray:
    phantom = Phantom(PhantomParams(slices=count, size=size, seed=seed))
    return np.stack([np.round(phantom.render_slice(i)[0] / 65535 * 255).astype(np.uint8) for i in range(count)])


def timed(label: str, images: np.ndarray, **options) -> tuple[radiomics.RadiomicFeatures, float]:
    radiomics.extract(images[:16], f"{label} (warm-up)", **options)  # start the pool (16: enough to), import
    start = time.perf_counter()
    features = radiomics.extract(images, label, **options)
    return features, time.perf_counter() - start


def largest_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """The largest relative difference over all columns (absolute where the reference is below 1e-12)."""
    scale = np.maximum(np.abs(reference), 1e-12)
    return float(np.nanmax(np.abs(ours - reference) / scale))


def minutes(rate: float, images: int) -> str:
    return f"{images / rate / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images per set (two sets: real and 'generated')")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for size in args.sizes:
        images = phantom_images(size, 2 * args.n, seed=5)
        one, one_s = timed("pyradiomics, one process", images, workers=1, backend="pyradiomics")
        every, every_s = timed(f"pyradiomics, {cores} processes", images, backend="pyradiomics")
        # FRD between the two interleaved halves (both cover the whole heart), by each backend's features
        reference_frd = radiomics.frechet_radiomics_distance(
            radiomics.RadiomicFeatures(every.names, every.values[0::2]),
            radiomics.RadiomicFeatures(every.names, every.values[1::2]),
        ).frd
        print(f"FRD v1 features of {len(images)} phantom images at {size} px, {cores} cores")
        print(f"  pyradiomics, one process     : {len(images) / one_s:8.2f} images/s")
        print(f"  pyradiomics, {cores} processes    : {len(images) / every_s:8.2f} images/s   FRD {reference_frd:.9f}")
        for device in devices:
            ours, ours_s = timed(f"torch on {device}", images, backend="torch", device=device)
            frd = radiomics.frechet_radiomics_distance(
                radiomics.RadiomicFeatures(ours.names, ours.values[0::2]),
                radiomics.RadiomicFeatures(ours.names, ours.values[1::2]),
            ).frd
            rate = len(images) / ours_s
            card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cores}-core CPU"
            difference = largest_difference(ours.values, every.values)
            print(f"  torch on {device} ({card}): {rate:8.2f} images/s   FRD {frd:.9f}")
            print(
                f"    vs pyradiomics on {cores} cores: {every_s / ours_s:.1f}x; vs one process: {one_s / ours_s:.1f}x"
            )
            print(f"    largest column difference to pyradiomics: {difference:.2e} relative")
            print(
                f"    a thesis job's FRD ({THESIS_FRD_IMAGES} images): {minutes(rate, THESIS_FRD_IMAGES)} "
                f"(pyradiomics on {cores} cores {minutes(len(images) / every_s, THESIS_FRD_IMAGES)}); "
                f"the {THESIS_REAL} real slices: {minutes(rate, THESIS_REAL)} "
                f"({minutes(len(images) / every_s, THESIS_REAL)})"
            )
            record(
                "frd",
                {
                    "size": size,
                    "images": len(images),
                    "cores": cores,
                    "device": card,
                    "pyradiomics_one_process_images_per_s": round(len(images) / one_s, 2),
                    "pyradiomics_all_cores_images_per_s": round(len(images) / every_s, 2),
                    "torch_images_per_s": round(rate, 2),
                    "ratio_vs_all_cores": round(every_s / ours_s, 2),
                    "ratio_vs_one_process": round(one_s / ours_s, 2),
                    "largest_relative_difference": difference,
                    "frd_pyradiomics": reference_frd,
                    "frd_torch": frd,
                    "thesis_job_frd_minutes": round(THESIS_FRD_IMAGES / rate / 60, 2),
                    "real_set_minutes": round(THESIS_REAL / rate / 60, 2),
                },
            )


if __name__ == "__main__":
    main()
