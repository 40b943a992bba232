"""Issue 18's models on a GPU: training throughput at 256 px and batch 64 of WGAN-GP and SNGAN beside the
thesis models they extend (WGAN, DCGAN), and what DiffAugment and bf16 cost or save, and StyleGAN2-ADA's
(issue 33) with and without ADA; each run is a real
`heartjobs run` (8 epochs over a 256-slice phantom, no evaluation). images/s is the mean over the epochs
after the first (which includes CUDA's warm-up). Writes one JSON file, rewritten after each case.

    python bench/gpu_beyond.py --out bench/results/gpu_beyond.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.runner.lifecycle import run_job

CASES = [  # (model, extra [train] line)
    ("wgan", ""),
    ("wgan_gp", ""),
    ("dcgan", ""),
    ("sngan", ""),
    ("sngan", "bf16 = true"),
    ("dcgan", 'augment = "translation,cutout"'),
    ("sngan", 'augment = "translation,cutout"'),
    ("wgan_gp", 'augment = "translation,cutout,brightness,contrast"'),
    ("stylegan2", ""),  # paper256 with ADA (issue 33): float32, its batch 64
    ("stylegan2", 'augment = "none"'),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_beyond.json"))
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_beyond: no CUDA device here")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "epochs": args.epochs}
    tmp = Path(tempfile.mkdtemp())
    start = time.time()
    generate(tmp / "phantom", PhantomParams(slices=256, size=512, seed=0))
    prepare(tmp / "phantom", tmp / "prepared", PrepareParams(size=256))
    results["setup_s"] = round(time.time() - start, 1)
    results["cases"] = {}
    for i, (model, extra) in enumerate(CASES):
        key = f"{model} {extra or 'as defined'}"
        spec = tmp / f"case{i}.toml"
        spec.write_text(
            f'name = "case{i}"\nmodel = "{model}"\n[data]\nprepared = "{tmp / "prepared"}"\n[train]\n'
            f'epochs = {args.epochs}\nbatch_size = 64\ndevice = "cuda"\nsample_every = {args.epochs}\n'
            f'checkpoint_every = {args.epochs}\n{extra}\n[eval]\nfid = false\n[output]\nroot = "{tmp / "artifacts"}"\n'
        )
        torch.cuda.reset_peak_memory_stats()
        began = time.time()
        try:
            run_dir = run_job(spec)
            losses = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
            later = losses[1:]
            results["cases"][key] = {
                "images_per_s": round(sum(e["images_per_s"] for e in later) / len(later), 1),
                "first_epoch_s": round(losses[0]["seconds"], 2),
                "last_d_loss": losses[-1]["d_loss"],
                "last_g_loss": losses[-1]["g_loss"],
                "wall_s": round(time.time() - began, 1),
                "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20),
            }
        except Exception as exc:  # a case that fails is a finding: record it and go on
            results["cases"][key] = {"error": "".join(traceback.format_exception_only(exc)).strip()[-600:]}
        print(key, results["cases"][key], flush=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
