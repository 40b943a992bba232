"""Process pool benchmark: FRD's radiomic features for the validity ladder's ten sets, with the pool of
spawned workers started once and reused (heartjobs.data.pool today) versus started and shut down for
each extraction (heartjobs before issue 26). The same images, the same features: both routes' features
must be equal. Prints both times and their ratio; appends one JSON line to bench/results/pool.jsonl.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import RESULTS, record

from heartjobs.data import pool
from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.evaluation import radiomics
from heartjobs.store.prepared import PreparedSet


def shut_down_pools() -> None:
    """What ordered_map did after every map before: its pool shut down, the next one started afresh."""
    for _, executor in pool._pools.values():
        executor.shutdown(wait=True)
    pool._pools.clear()


def extract_all(sets: list[np.ndarray], fresh_pool_each: bool) -> tuple[float, list[np.ndarray]]:
    shut_down_pools()  # both routes start without a pool
    start = time.perf_counter()
    features = []
    for i, images in enumerate(sets):
        features.append(radiomics.extract(images, f"set {i}").values)
        if fresh_pool_each:
            shut_down_pools()
    return time.perf_counter() - start, features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=10, help="extractions (the ladder: 9 rungs and the real set)")
    parser.add_argument("--n", type=int, default=24, help="images per set")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        generate(tmp / "phantom", PhantomParams(slices=args.n * 2, size=2 * args.size, seed=5))
        prepare(tmp / "phantom", tmp / "prepared", PrepareParams(size=args.size))
        images = np.asarray(PreparedSet.open(tmp / "prepared").images)
        rng = np.random.default_rng(0)
        sets = [images[rng.choice(len(images), args.n, replace=False)] for _ in range(args.sets)]
        fresh_s, fresh = extract_all(sets, fresh_pool_each=True)
        reused_s, reused = extract_all(sets, fresh_pool_each=False)
    for a, b in zip(fresh, reused, strict=True):
        np.testing.assert_array_equal(a, b)
    cores = os.cpu_count()
    print(f"FRD features of {args.sets} sets x {args.n} images at {args.size} px, {cores} cores")
    print(f"  a pool started for each extraction : {fresh_s:7.1f} s")
    print(f"  one pool, reused                   : {reused_s:7.1f} s")
    print(f"  speed-up                           : {fresh_s / reused_s:.2f}x (the features equal)")
    record(
        "pool",
        {
            "sets": args.sets,
            "n": args.n,
            "size": args.size,
            "cores": cores,
            "fresh_pool_s": round(fresh_s, 2),
            "reused_pool_s": round(reused_s, 2),
            "ratio": round(fresh_s / reused_s, 2),
        },
    )


if __name__ == "__main__":
    main()
