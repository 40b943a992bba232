"""GPU smoke check: each thesis model trained a few hundred steps at 256 px, then FID with real-sized batches.

For a new box (and the `device` tool): prints images/s per model (the mean over epochs after the first,
which includes warm-up) and the seconds FID takes, and appends a JSON line to bench/results/gpu_check.jsonl.
Runs on the embedded phantom; FID uses the standard weights when present, otherwise untrained ones (say so).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from results_log import RESULTS, record

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import HeartjobsError
from heartjobs.evaluation.runs import evaluate_run
from heartjobs.evaluation.weights import resolve_weights
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.schema import EvalSection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="phantom slices in the training set")
    parser.add_argument("--steps", type=int, default=200, help="training steps per model (about)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fid-n", type=int, default=3000, help="generated images for the FID")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (tiny sizes only)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("gpu-check: no CUDA device here (pass --allow-cpu with small --size/--steps to try it)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    try:
        weights = resolve_weights("standard", download=False)
    except HeartjobsError:
        weights = resolve_weights("untrained")
    batches_per_epoch = max(1, args.images // args.batch_size)
    epochs = max(2, args.steps // batches_per_epoch)

    results: dict = {"gpu": gpu, "size": args.size, "batch_size": args.batch_size}
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("HEARTJOBS_CACHE", str(tmp / "cache"))
        generate(tmp / "phantom", PhantomParams(slices=args.images, size=args.size * 2, seed=0))
        prepare(tmp / "phantom", tmp / "prepared", PrepareParams(size=args.size))
        for model in ("gan", "wgan", "dcgan"):
            spec = tmp / f"{model}.toml"
            spec.write_text(
                f'name = "gpu_check_{model}"\nmodel = "{model}"\n[data]\nprepared = "{tmp / "prepared"}"\n'
                f'[train]\nepochs = {epochs}\nbatch_size = {args.batch_size}\ndevice = "{device}"\n'
                f"sample_every = {epochs}\ncheckpoint_every = {epochs}\n[eval]\nfid = false\n"
                f'[output]\nroot = "{tmp / "artifacts"}"\n'
            )
            run_dir = run_job(spec)
            losses = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
            steady = losses[1:] or losses
            results[f"{model}_images_per_s"] = round(sum(e["images_per_s"] for e in steady) / len(steady), 1)
            results[f"{model}_steps"] = epochs * batches_per_epoch
            if model == "dcgan":
                settings = EvalSection(
                    n_generated=args.fid_n, repeats=1, weights=str(weights.path), kid=False, frd=False
                )
                start = time.perf_counter()
                report = evaluate_run(run_dir, settings, device=device)
                results["fid_seconds_cold"] = round(time.perf_counter() - start, 2)
                start = time.perf_counter()
                evaluate_run(run_dir, settings, device=device)  # real statistics now cached
                results["fid_seconds_cached"] = round(time.perf_counter() - start, 2)
                results["fid"] = round(report.fid_mean, 3)
                results["fid_n"] = args.fid_n
                results["fid_weights"] = weights.kind if weights.standard else "untrained"
    for model in ("gan", "wgan", "dcgan"):
        print(f"{model:6s} {results[f'{model}_images_per_s']:10.1f} images/s  ({results[f'{model}_steps']} steps)")
    print(
        f"FID (dcgan, {args.fid_n} generated vs {args.images} real, {results['fid_weights']} weights): "
        f"{results['fid_seconds_cold']} s with real statistics computed, {results['fid_seconds_cached']} s cached"
    )
    record("gpu_check", results)


if __name__ == "__main__":
    main()
