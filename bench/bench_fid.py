"""FID benchmark: the thesis' route versus `heartjobs fid`, same generator, same n, same weights.

Thesis route, per repeat (bench/thesis_pipeline.py's fid_repeat): generate the images one at a time, save
each with torchvision's save_image(normalize=True), then run pytorch-fid's CLI on the real PNG folder and the
generated one (which recomputes the real statistics every time); fed heartjobs' noise, so the FIDs must agree.
heartjobs: `evaluate_run()` with the same n, repeats, dims, weights and per-image min-max quantization,
starting from an empty statistics cache.
Prints both times, both FID values and the ratio; appends a JSON line to bench/results/fid.jsonl.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import thesis_pipeline
import torch
from results_log import RESULTS, record

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.evaluation.runs import evaluate_run
from heartjobs.evaluation.weights import resolve_weights
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.schema import EvalSection
from heartjobs.store.checkpoint import load_generator

EVAL_BATCH = 100  # heartjobs' evaluation batch here, which its noise is drawn in


def thesis_route(run_dir: Path, real_png: Path, n: int, repeats: int, dims: int, weights: Path) -> list[float]:
    """The thesis' FID (thesis_pipeline.fid_repeat) `repeats` times, each in a fresh folder; the FIDs."""
    generator, meta = load_generator(run_dir / "generator.pt")
    values = []
    for r in range(repeats):
        # The same noise heartjobs draws for repeat r (seed r, in batches of EVAL_BATCH), so both routes
        # measure the same images and their FIDs must agree.
        rng = torch.Generator().manual_seed(r)
        z = torch.cat(
            [torch.randn(min(EVAL_BATCH, n - s), meta["latent_dim"], generator=rng) for s in range(0, n, EVAL_BATCH)]
        )
        with tempfile.TemporaryDirectory() as work:
            run = thesis_pipeline.fid_repeat(
                generator, meta["latent_dim"], real_png, n, dims, weights, "cpu", Path(work), noise=z
            )
        values.append(run["fid"])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="generated images per repeat")
    parser.add_argument("--real", type=int, default=100, help="real images (phantom slices)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dims", type=int, default=2048, choices=(64, 192, 768, 2048))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--weights", default="untrained", help="standard | untrained | path (same for both routes)")
    args = parser.parse_args()

    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        os.environ["HEARTJOBS_CACHE"] = str(tmp / "cache")  # cold: heartjobs computes the real statistics too
        generate(tmp / "phantom", PhantomParams(slices=args.real, size=args.size * 2, seed=5))
        prepare(tmp / "phantom", tmp / "prepared", PrepareParams(size=args.size, export_png=True))
        spec = tmp / "bench.toml"
        spec.write_text(
            f'name = "bench_fid"\nmodel = "gan"\n[data]\nprepared = "{tmp / "prepared"}"\n'
            f'[train]\nepochs = 2\ndevice = "cpu"\n[eval]\nfid = false\n[output]\nroot = "{tmp / "artifacts"}"\n'
        )
        run_dir = run_job(spec)
        weights = resolve_weights(args.weights)

        start = time.perf_counter()
        thesis = thesis_route(run_dir, tmp / "prepared" / "png", args.n, args.repeats, args.dims, weights.path)
        thesis_s = time.perf_counter() - start

        settings = EvalSection(
            batch_size=EVAL_BATCH,
            n_generated=args.n,
            repeats=args.repeats,
            dims=args.dims,
            weights=str(weights.path),
            normalize="per_image_minmax",
            kid=False,
            frd=False,  # FID alone on both routes (bench_frd.py measures FRD)
        )
        start = time.perf_counter()
        report = evaluate_run(run_dir, settings, device="cpu")
        ours_s = time.perf_counter() - start

    mean = sum(thesis) / len(thesis)
    print(
        f"FID, {args.repeats} repeats x {args.n} generated vs {args.real} real, "
        f"dims {args.dims}, {weights.kind} weights"
    )
    print(f"  thesis route (1-by-1 PNGs + pytorch-fid CLI) : {thesis_s:7.1f} s   FID {mean:.3f}  {thesis}")
    print(f"  heartjobs fid (batched, cached real stats)   : {ours_s:7.1f} s   FID {report.fid_mean:.3f}  "
          f"{[round(r['fid'], 3) for r in report.repeats]}")  # fmt: skip
    print(f"  speed-up                                     : {thesis_s / ours_s:.2f}x")
    record(
        "fid",
        {
            "n": args.n,
            "real": args.real,
            "repeats": args.repeats,
            "dims": args.dims,
            "weights": weights.kind,
            "thesis_s": round(thesis_s, 2),
            "heartjobs_s": round(ours_s, 2),
            "ratio": round(thesis_s / ours_s, 2),
            "thesis_fid": thesis,
            "heartjobs_fid": [r["fid"] for r in report.repeats],
        },
    )


if __name__ == "__main__":
    main()
