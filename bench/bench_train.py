"""Training throughput and peak memory: heartjobs' trainer versus the thesis pipeline, per model.

The thesis pipeline (its scripts, as bench/thesis_pipeline.py rebuilds them for every benchmark): PNG files
read through torchvision's ImageFolder with the thesis transforms (Grayscale, Resize, ToTensor, Normalize(0.5,
0.5)), a DataLoader with shuffling (num_workers 0, the scripts' default), noise drawn with torch.randn on the
device, and the losses read with .item() after every batch. heartjobs: the Trainer (the set on the device as
uint8, no host sync per step).
Same model, batch size and number of steps; each route runs in its own subprocess (one at a time) so that
its peak RSS is its own. Prints images/s of both, the ratio, and the peak memory; appends JSON lines to
bench/results/train.jsonl.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import thesis_pipeline
import torch
from results_log import RESULTS, record


def _peak_memory(device: str) -> dict:
    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def thesis_route(prepared: Path, model: str, batch_size: int, epochs: int, device: str) -> dict:
    """The thesis scripts' loop (thesis_pipeline.train), one warm-up epoch, at the thesis' latent dim."""
    size = np.load(prepared / "images.npy", mmap_mode="r").shape[-1]
    run = thesis_pipeline.train(
        prepared / "imagefolder",
        size,
        model,
        batch_size,
        latent_dim=100,
        warmup=1,
        epochs=epochs,
        device=device,
        samples=prepared.parent / "thesis_samples",
    )
    return {"images_per_s": run["images"] / run["seconds"], **_peak_memory(device)}


def heartjobs_route(prepared: Path, model: str, batch_size: int, epochs: int, device: str) -> dict:
    from heartjobs.spec.loading import load_spec
    from heartjobs.training.loop import Trainer

    spec_path = prepared.parent / f"{model}.toml"
    spec_path.write_text(
        f'name = "bench"\nmodel = "{model}"\n[data]\nprepared = "{prepared}"\n'
        f'[train]\nbatch_size = {batch_size}\ndevice = "{device}"\n[eval]\nfid = false\n'
    )
    from heartjobs.store.prepared import PreparedSet

    trainer = Trainer(load_spec(spec_path), PreparedSet.open(prepared).tensor(), torch.device(device))
    trainer.train_epoch()  # warm-up, not timed
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        trainer.train_epoch()
        seen += trainer.images.shape[0]
    return {"images_per_s": seen / (time.perf_counter() - start), **_peak_memory(device)}


def _child(args: argparse.Namespace) -> None:
    route = thesis_route if args.route == "thesis" else heartjobs_route
    print(json.dumps(route(Path(args.prepared), args.model, args.batch_size, args.epochs, args.device)))


def _prepare(folder: Path, images: int, size: int) -> Path:
    from heartjobs.data.phantom import PhantomParams, generate
    from heartjobs.data.prepare import PrepareParams, prepare

    generate(folder / "phantom", PhantomParams(slices=images, size=size * 2, seed=3))
    prepare(folder / "phantom", folder / "prepared", PrepareParams(size=size, export_png=True))
    thesis_pipeline.imagefolder(folder / "prepared")
    return folder / "prepared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gan,wgan,dcgan")
    parser.add_argument("--size", type=int, default=None, help="default: 64 on the CPU, 256 on a GPU")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs (default: 5, DCGAN on CPU 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--route", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.route:
        _child(args)
        return

    size = args.size or (256 if args.device == "cuda" else 64)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        prepared = _prepare(Path(tmp), args.images, size)
        for model in args.models.split(","):
            epochs = args.epochs or (1 if model == "dcgan" and args.device == "cpu" else 5)
            out = {}
            for route in ("thesis", "heartjobs"):
                command = [sys.executable, __file__, "--route", route, "--prepared", str(prepared),
                           "--model", model, "--batch-size", str(args.batch_size), "--epochs", str(epochs),
                           "--device", args.device]  # fmt: skip
                result = subprocess.run(command, capture_output=True, text=True, check=True)
                out[route] = json.loads(result.stdout.strip().splitlines()[-1])
            ratio = out["heartjobs"]["images_per_s"] / out["thesis"]["images_per_s"]
            memory = ", ".join(
                f"{route} {key.removeprefix('peak_').removesuffix('_mib')} {value} MiB"
                for route in ("thesis", "heartjobs")
                for key, value in out[route].items()
                if key.startswith("peak")
            )
            thesis_ips, ours_ips = out["thesis"]["images_per_s"], out["heartjobs"]["images_per_s"]
            print(
                f"{model:5s} {size}px batch {args.batch_size} {args.device}: thesis {thesis_ips:8.1f} img/s  "
                f"heartjobs {ours_ips:8.1f} img/s  ratio {ratio:.2f}x  | peak {memory}"
            )
            record("train", {"model": model, "size": size, "batch_size": args.batch_size,
                      "device": args.device, "images": args.images, "epochs": epochs,
                      "thesis": out["thesis"], "heartjobs": out["heartjobs"], "ratio": round(ratio, 3)})  # fmt: skip


if __name__ == "__main__":
    main()
