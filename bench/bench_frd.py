"""FRD benchmark: frd-score's own route versus heartjobs', the same images, at 64 and 256 px.

frd-score's route: the real and generated images written as PNG files, then `python -m frd_score REAL GEN`
(its default worker count, cpu_count - 2, at least 1; real features extracted on every call). heartjobs:
the same uint8 images straight to pyradiomics in memory on all cores (heartjobs.evaluation.radiomics),
real features from an empty cache. Both FRD values are printed (they must agree), with the time of each
route, their ratio and heartjobs' radiomic images/s, and from that rate the cost of a thesis job's FRD
on this machine. Appends one JSON line per size to bench/results/frd.jsonl.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import RESULTS, record

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.evaluation import radiomics
from heartjobs.imaging import save_pngs
from heartjobs.store.prepared import PreparedSet

# A thesis job's FRD: 3 repeats x frd_n 1000 generated images, plus the 3307 real images once per set.
THESIS_FRD_IMAGES = 3 * 1000
THESIS_REAL = 3307


def frd_score_route(real: np.ndarray, generated: np.ndarray, folder: Path) -> float:
    save_pngs(real, folder / "real")
    save_pngs(generated, folder / "generated")
    result = subprocess.run(
        [sys.executable, "-m", "frd_score", str(folder / "real"), str(folder / "generated")],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"FRD \(v1\): ([-0-9.eE+]+)", result.stdout).group(1))


def heartjobs_route(real: np.ndarray, generated: np.ndarray) -> float:
    features = radiomics.extract(real, "real"), radiomics.extract(generated, "generated")
    return radiomics.frechet_radiomics_distance(*features).frd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images per set (real and 'generated': two halves)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()

    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        os.environ["HEARTJOBS_CACHE"] = str(tmp / "cache")
        generate(tmp / "phantom", PhantomParams(slices=2 * args.n, size=2 * max(args.sizes), seed=5))
        for size in args.sizes:
            prepare(tmp / "phantom", tmp / f"prepared{size}", PrepareParams(size=size))
            images = np.asarray(PreparedSet.open(tmp / f"prepared{size}").images)
            # the two halves interleaved, so both cover the whole heart
            real, generated = images[0::2][: args.n], images[1::2][: args.n]

            start = time.perf_counter()
            reference = frd_score_route(real, generated, tmp / f"png{size}")
            reference_s = time.perf_counter() - start
            start = time.perf_counter()
            ours = heartjobs_route(real, generated)
            ours_s = time.perf_counter() - start

            rate = 2 * args.n / ours_s
            thesis_minutes = (THESIS_FRD_IMAGES + THESIS_REAL) / rate / 60
            cores = os.cpu_count()
            print(f"FRD v1, {args.n} vs {args.n} phantom images at {size} px, {cores} cores")
            print(f"  frd-score route (PNG files + its CLI)  : {reference_s:7.1f} s   FRD {reference:.6f}")
            print(f"  heartjobs (in memory, all cores)      : {ours_s:7.1f} s   FRD {ours:.6f}")
            print(f"  speed-up                              : {reference_s / ours_s:.2f}x")
            print(f"  heartjobs radiomic features           : {rate:.2f} images/s")
            print(
                f"  a thesis job's FRD here ({THESIS_FRD_IMAGES} generated + {THESIS_REAL} real, first time): "
                f"{thesis_minutes:.0f} min"
            )
            record(
                "frd",
                {
                    "size": size,
                    "n": args.n,
                    "cores": cores,
                    "frd_score_s": round(reference_s, 2),
                    "heartjobs_s": round(ours_s, 2),
                    "ratio": round(reference_s / ours_s, 2),
                    "images_per_s": round(rate, 2),
                    "frd_score_frd": reference,
                    "heartjobs_frd": ours,
                    "thesis_job_frd_minutes": round(thesis_minutes, 1),
                },
            )


if __name__ == "__main__":
    main()
