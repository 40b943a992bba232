"""Ingest benchmark: 2048 px 16-bit JPEG 2000 slices to 256 px, reduced-resolution vs full decoding.

Both routes run the real `prepare()` on the same files in this one process, one after the other and
alternating over several rounds; the best time of each is compared. Prints both times, their ratio,
how far the two outputs differ, and appends a JSON line to bench/results/ingest.jsonl.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import RESULTS, record

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--source-size", type=int, default=2048)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes for both routes")
    args = parser.parse_args()

    src = RESULTS / "data" / f"phantom_{args.source_size}_{args.slices}"
    generate(src, PhantomParams(slices=args.slices, size=args.source_size, seed=0))
    routes = {"reduced": True, "full": False}
    best = {name: float("inf") for name in routes}
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        for _ in range(args.rounds):
            for name, reduced in routes.items():
                out = Path(tmp) / name
                shutil.rmtree(out, ignore_errors=True)
                params = PrepareParams(size=args.size, reduced_resolution=reduced)
                start = time.perf_counter()
                prepare(src, out, params, workers=args.workers)
                best[name] = min(best[name], time.perf_counter() - start)
                outputs[name] = np.load(out / "images.npy")

    ratio = best["full"] / best["reduced"]
    diff = np.abs(outputs["full"].astype(int) - outputs["reduced"]).mean()
    print(
        f"ingest {args.slices} slices {args.source_size}px 16-bit jp2 -> {args.size}px "
        f"(workers {args.workers}, best of {args.rounds})"
    )
    print(f"  full decode + resize : {best['full']:.3f} s  ({args.slices / best['full']:.1f} slices/s)")
    print(f"  reduced-resolution   : {best['reduced']:.3f} s  ({args.slices / best['reduced']:.1f} slices/s)")
    print(f"  speed-up             : {ratio:.1f}x   (mean |difference| of the outputs: {diff:.2f} grey levels)")
    record(
        "ingest",
        {
            "slices": args.slices,
            "source_size": args.source_size,
            "size": args.size,
            "workers": args.workers,
            "full_s": round(best["full"], 4),
            "reduced_s": round(best["reduced"], 4),
            "ratio": round(ratio, 2),
            "mean_abs_diff": round(float(diff), 3),
        },
    )


if __name__ == "__main__":
    main()
