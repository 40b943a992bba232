"""Hardware efficiency: achieved matmul FLOP/s of a GAN/WGAN training step against the machine's dense
matmul FLOP/s (torch.mm on square float32 matrices), measured in one run.

The step's FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (every matmul of the forward and
backward passes, as executed); the step is then timed without the counter. Prints both FLOP/s and their
ratio ("how close to the limit"); appends a JSON line to bench/results/flops.jsonl.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from results_log import RESULTS, record
from torch.utils.flop_counter import FlopCounterMode

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.spec.loading import load_spec
from heartjobs.training.loop import Trainer


def dense_matmul_flops(n: int, device: torch.device, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        torch.mm(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gan,wgan")
    parser.add_argument("--size", type=int, default=None, help="default: 64 on the CPU, 256 on a GPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--mm-size", type=int, default=2048)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    size = args.size or (256 if device.type == "cuda" else 64)

    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        images = args.batch_size * 4
        generate(tmp / "phantom", PhantomParams(slices=images, size=size, seed=1))
        prepare(tmp / "phantom", tmp / "prepared", PrepareParams(size=size))
        peak = dense_matmul_flops(args.mm_size, device)
        for model in args.models.split(","):
            spec_path = tmp / f"{model}.toml"
            spec_path.write_text(
                f'name = "flops"\nmodel = "{model}"\n[data]\nprepared = "{tmp / "prepared"}"\n'
                f'[train]\nbatch_size = {args.batch_size}\ndevice = "{device.type}"\n[eval]\nmeasure = false\n'
            )
            from heartjobs.store.prepared import PreparedSet

            trainer = Trainer(load_spec(spec_path), PreparedSet.open(tmp / "prepared").tensor(), device)
            family_step = trainer.family.step

            def step(real, index, family_step=family_step, trainer=trainer):
                return family_step(trainer, real, index)

            real = trainer.images[: args.batch_size].float().div_(127.5).sub_(1.0)
            # WGAN: n_critic steps, one of which also trains G, make up one "step" of the schedule
            schedule = range(trainer.spec.train.n_critic or 1)
            with FlopCounterMode(display=False) as counter:
                for index in schedule:
                    step(real, index)
            flops = counter.get_total_flops()
            for index in schedule:  # warm-up
                step(real, index)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                for index in schedule:
                    step(real, index)
            if device.type == "cuda":
                torch.cuda.synchronize()
            achieved = flops * args.steps / (time.perf_counter() - start)
            print(
                f"{model:5s} {size}px batch {args.batch_size}: step {achieved / 1e9:8.1f} GFLOP/s, dense mm "
                f"{args.mm_size}^2 {peak / 1e9:8.1f} GFLOP/s, ratio {achieved / peak:.2f}"
            )
            record("flops", {"model": model, "size": size, "batch_size": args.batch_size,
                      "device": device.type, "step_flops": flops, "achieved_flops_per_s": achieved,
                      "dense_mm_flops_per_s": peak, "ratio": round(achieved / peak, 3)})  # fmt: skip


if __name__ == "__main__":
    main()
