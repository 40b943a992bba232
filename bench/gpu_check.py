"""GPU smoke check: each thesis model trained a few hundred steps at 256 px, then FID with real-sized batches.

For a new box (and the `device` tool): prints images/s per model (the mean over epochs after the first,
which includes warm-up) and the seconds FID takes, and appends a JSON line to bench/results/gpu_check.jsonl.
Runs on the embedded phantom; FID uses the standard weights when present, otherwise untrained ones (say so).
Then a background checkpoint of the DCGAN trainer's state on the GPU (the part the CPU tests cannot reach):
the host copy is in pinned memory with the originals' strides, the file written while training goes on
loads and equals a synchronous save of the same moment, and the seconds training waits for each (the host
copy and hand-off against the whole synchronous save), side by side; a mismatch ends the check, exit 1.
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
from heartjobs.spec.loading import load_spec
from heartjobs.spec.schema import EvalSection
from heartjobs.store.background import BackgroundWriter, host_copy
from heartjobs.store.checkpoint import load_checkpoint, save_checkpoint, save_checkpoint_in_background
from heartjobs.store.prepared import PreparedSet
from heartjobs.training.loop import Trainer

REPEATS = 3  # each way of checkpointing timed this often; the median is reported


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
                results |= background_checkpoint(spec, tmp / "prepared", torch.device(device), tmp / "ckpt")
    for model in ("gan", "wgan", "dcgan"):
        print(f"{model:6s} {results[f'{model}_images_per_s']:10.1f} images/s  ({results[f'{model}_steps']} steps)")
    print(
        f"FID (dcgan, {args.fid_n} generated vs {args.images} real, {results['fid_weights']} weights): "
        f"{results['fid_seconds_cold']} s with real statistics computed, {results['fid_seconds_cached']} s cached"
    )
    print(
        f"checkpoint (dcgan, {results['checkpoint_mib']} MiB): training waits {results['checkpoint_sync_s']} s "
        f"for a synchronous save, {results['checkpoint_handoff_s']} s for a background one (host copy, pinned: "
        f"{results['checkpoint_pinned']}); the background file equals the synchronous one"
    )
    record("gpu_check", results)


def background_checkpoint(spec_path: Path, prepared: Path, device: torch.device, folder: Path) -> dict:
    """A trainer after one epoch on `device`: the seconds training waits for a synchronous save and for a
    background one's hand-off (the host copy), the median of REPEATS each; the host copy pinned (on CUDA) with
    the originals' strides; the file written in the background while training goes on equal, tensor for
    tensor, to the synchronous file of the same moment. Raises SystemExit at the first difference."""
    spec = load_spec(spec_path)
    trainer = Trainer(spec, PreparedSet.open(prepared).tensor(), device)
    trainer.train_epoch()
    copied = host_copy(trainer.state_dict(), device)
    for where, original, host in _tensor_pairs(trainer.state_dict(), copied, ""):  # optimizer state included
        pinned = original.device.type == "cuda"  # host tensors are copied as they are, never pinned
        if host.device.type != "cpu" or host.is_pinned() != pinned:
            raise SystemExit(f"gpu-check: {where}: host copy on {host.device}, pinned {host.is_pinned()}")
        if host.stride() != original.stride() or not torch.equal(host, original.cpu()):
            raise SystemExit(f"gpu-check: {where}: host copy differs from the original")
    sync, handoff = [], []
    for repeat in range(REPEATS):
        start = time.perf_counter()
        reference = save_checkpoint(folder / f"sync{repeat}", trainer.state_dict(), spec.spec_hash, keep=1)
        sync.append(time.perf_counter() - start)
        with BackgroundWriter() as writer:
            start = time.perf_counter()
            path = save_checkpoint_in_background(
                writer, folder / f"bg{repeat}", trainer.state_dict(), spec.spec_hash, 1, device
            )
            handoff.append(time.perf_counter() - start)
            trainer.train_epoch()  # changes every original while the copy is written
        written, expected = load_checkpoint(path, spec.spec_hash), load_checkpoint(reference, spec.spec_hash)
        if path.name != reference.name or (difference := _first_difference(written, expected, "")) is not None:
            raise SystemExit(f"gpu-check: background checkpoint {path.name}: differs at {difference}")
    return {
        "checkpoint_mib": round(reference.stat().st_size / 2**20, 1),
        "checkpoint_sync_s": round(sorted(sync)[REPEATS // 2], 4),
        "checkpoint_handoff_s": round(sorted(handoff)[REPEATS // 2], 4),
        "checkpoint_pinned": device.type == "cuda",
    }


def _tensor_pairs(a: object, b: object, where: str):
    """(key path, tensor of a, tensor of b) for every tensor of `a`, at the same place in `b`."""
    if isinstance(a, torch.Tensor):
        yield where, a, b
    elif isinstance(a, dict):
        for key, value in a.items():
            yield from _tensor_pairs(value, b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _tensor_pairs(x, y, f"{where}/{index}")


def _first_difference(a: object, b: object, where: str) -> str | None:
    """Where two loaded checkpoints first differ (a key path), or None when equal throughout."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        return None if same and a.shape == b.shape and torch.equal(a, b) else where or "/"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where} (keys)"
        found = (_first_difference(a[k], b[k], f"{where}/{k}") for k in a)
        return next((d for d in found if d is not None), None)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{where} (length)"
        found = (_first_difference(x, y, f"{where}/{i}") for i, (x, y) in enumerate(zip(a, b, strict=True)))
        return next((d for d in found if d is not None), None)
    return None if a == b else where or "/"


if __name__ == "__main__":
    main()
