"""GPU benchmark: heartjobs against the thesis' own pipeline, side by side on one device (`make gpu-bench`).

In one run, at the thesis' image size (256 px) and on the embedded phantom:

- Training throughput of every (model, batch size, latent dim) in the thesis' 21-job matrix
  (jobs/thesis.sweep.toml): heartjobs' Trainer against the thesis' pipeline rebuilt from its scripts
  (github.com/royio3/Heart_CT_GAN): torchvision's ImageFolder over 256 px PNGs with Grayscale, Resize,
  ToTensor and Normalize(0.5, 0.5), DataLoader(batch_size, shuffle=True) without workers, the noise drawn on
  the device, every loss read with .item() every batch, a line printed per epoch, a 25-image sample saved
  every 400 batches, and the scripts' update order (GAN and DCGAN: G then D; WGAN: the critic
  every batch with weight clipping, G every n_critic-th batch). Both routes train heartjobs' own models
  (heartjobs.models), so the difference is the pipeline, not the architecture, under the thesis' precision
  (TF32 convolutions, FP32 matmuls: what the matrix's jobs set), over the same number of images, warm-up
  excluded, with the peak GPU memory of each.
- heartjobs' speed switches (train.tf32, train.bf16, train.compile, train.phase_conv), each against the
  thesis-exact setting on DCGAN at batch 64: images/s, and one short run's FID with and without (n stated).
- FID: heartjobs' evaluation of 3 x 3000 generated images at 2048-d (cold, then with the real statistics
  cached), the thesis' route for one repeat (each image generated alone and saved with
  save_image(normalize=True), then pytorch-fid's CLI), and KID's cost per repeat at the thesis' sizes.
- The projected time of the 21 jobs at 200 epochs over 3307 images with their evaluation, both pipelines.

Prints tables and writes one JSON file (--out; rewritten after each phase, "complete" once done). FID uses
the standard weights when present, otherwise untrained ones, and says which. Without CUDA, `--allow-cpu` runs
all of it at toy sizes (`--tiny` picks those anywhere; tests/test_gpu_bench.py runs it, so it never rots).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import thesis_pipeline
import tomli_w
import torch
from results_log import RESULTS
from rich.console import Console
from rich.table import Table

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.evaluation.driver import measure
from heartjobs.evaluation.statistics import kernel_inception_distance
from heartjobs.evaluation.weights import resolve_weights
from heartjobs.grids import save_grid
from heartjobs.plots import plot_losses
from heartjobs.spec.defaults import COMMON_DEFAULTS, train_defaults
from heartjobs.spec.loading import load_spec
from heartjobs.spec.schema import EvalSection
from heartjobs.spec.sweep import expand, load_sweep
from heartjobs.store.checkpoint import build_generator, save_checkpoint
from heartjobs.store.prepared import PreparedSet
from heartjobs.training.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "jobs" / "thesis.sweep.toml"  # the thesis' 21 jobs
THESIS_IMAGES = 3307  # the thesis' training set (every second slice of the 6613 of LADAF-2020-27)
THESIS_PRECISION = {"tf32": "convolutions", "compile": False, "bf16": False}  # PyTorch's defaults of its time
SWITCHES = {
    "tf32": {"tf32": True},
    "bf16": {"bf16": True},
    "compile": {"compile": True},
    "phase_conv": {"phase_conv": True},  # the exact rewrite of upsample + 3x3 conv (heartjobs.models.phase_conv)
}
PROFILES = {
    # one H100 or H200: about 4-5 minutes in all (the docstring of main() has the budget)
    "gpu": {
        "size": 256,
        "images": 512,
        "warmup_epochs": 1,
        "mlp_epochs": 8,
        "dcgan_epochs": 4,
        "fid_n": 3000,
        "fid_repeats": 3,
        "fid_dims": 2048,
        "switch_epochs": 6,
        "switch_fid_n": 1000,
        "switches": "tf32,bf16,compile,phase_conv",
    },
    # the CPU, in CI: every phase at toy sizes in about 30 s on 2 cores (compile left out: minutes there)
    "tiny": {
        "size": 16,
        "images": 16,
        "warmup_epochs": 1,
        "mlp_epochs": 1,
        "dcgan_epochs": 1,
        "fid_n": 10,
        "fid_repeats": 3,
        "fid_dims": 64,
        "switch_epochs": 1,
        "switch_fid_n": 10,
        "switches": "tf32,bf16,phase_conv",
    },
}


# --- small helpers ---


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":  # the previous route's tensors freed first (a collection costs ~0.3 s: not on the CPU)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device: str) -> float | None:
    """The peak GPU memory allocated since the last _reset_peak (None on the CPU: nothing to measure)."""
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def _write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def _say(text: str) -> None:
    print(text, flush=True)


# --- the data ---


def phantom_prepared(folder: Path, images: int, size: int, *, export_png: bool = False) -> Path:
    """The embedded phantom, rendered at the training size (a quarter of the work; the speed measured does not
    depend on the pictures) and prepared, inline at toy sizes (a pool of spawned workers, each importing
    torch, would cost more than the work)."""
    workers = 1 if images * size <= 64 * 64 else None
    generate(folder / "phantom", PhantomParams(slices=images, size=size, seed=3), workers=workers)
    prepare(folder / "phantom", folder / "prepared", PrepareParams(size=size, export_png=export_png), workers=workers)
    return folder / "prepared"


def phantom_set(folder: Path, images: int, size: int) -> Path:
    """phantom_prepared with its 8-bit PNGs in the thesis' ImageFolder layout (one folder per class), as
    bench_train.py's _prepare makes it."""
    prepared = phantom_prepared(folder, images, size, export_png=True)
    thesis_pipeline.imagefolder(prepared)
    return prepared


def phase_recorder(results: dict, out: Path, started: float) -> Callable[[str, float], None]:
    """phase_done(name, start): the phase's seconds into results["phases_s"], the JSON rewritten, a line said."""

    def phase_done(name: str, start: float) -> None:
        results["phases_s"][name] = round(time.perf_counter() - start, 1)
        _write_json(out, results)
        _say(f"-- {name}: {results['phases_s'][name]} s (total {time.perf_counter() - started:.0f} s)")

    return phase_done


# --- the thesis' matrix ---


def thesis_matrix() -> list[dict]:
    """The 21 jobs of jobs/thesis.sweep.toml: name, model, batch size, latent dim, epochs, the [train] table the
    job file sets, and its resolved [eval] section."""
    jobs = []
    for name, spec in expand(load_sweep(SWEEP), SWEEP).items():
        train = train_defaults(spec["model"]) | spec.get("train", {})
        jobs.append(
            {
                "name": name,
                "model": spec["model"],
                "batch_size": train["batch_size"],
                "latent_dim": train["latent_dim"],
                "epochs": train["epochs"],
                "sample_every": train["sample_every"],
                "checkpoint_every": train["checkpoint_every"],
                "train": dict(spec.get("train", {})),
                "eval": EvalSection(**spec.get("eval", {})),
            }
        )
    return jobs


def configurations(jobs: list[dict]) -> list[dict]:
    """The matrix's distinct (model, batch size, latent dim): what training speed depends on (lr does not)."""
    configs: dict[tuple, dict] = {}
    for job in jobs:
        key = (job["model"], job["batch_size"], job["latent_dim"])
        if key not in configs:
            train = {k: v for k, v in job["train"].items() if k != "lr"}
            configs[key] = {"model": key[0], "batch_size": key[1], "latent_dim": key[2], "train": train, "jobs": []}
        configs[key]["jobs"].append(job["name"])
    return list(configs.values())


# --- training: both routes ---


def throughput(images: int, seconds: float, warmup_s: float, device: str) -> dict:
    """A route's training figures as the JSON has them: images/s, the timed images and seconds, the warm-up's
    seconds and the peak GPU memory since the route's _reset_peak."""
    return {
        "images_per_s": round(images / seconds, 2),
        "images": images,
        "seconds": round(seconds, 3),
        "warmup_s": round(warmup_s, 3),
        "peak_gpu_mib": _peak_mib(device),
    }


# --- training: heartjobs ---


def heartjobs_route(
    prepared: Path, folder: Path, model: str, train: dict, warmup: int, epochs: int, device: str
) -> tuple[dict, Trainer]:
    """heartjobs' Trainer with the spec's [train] values, timed over `epochs` epochs after `warmup`."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "spec.toml"
    spec = {
        "name": "gpu_bench",
        "model": model,
        "data": {"prepared": str(prepared)},
        "train": {**train, "device": device},
        "eval": {"fid": False},
        "output": {"root": str(folder / "artifacts")},
    }
    spec_path.write_text(tomli_w.dumps(spec))
    resolved = load_spec(spec_path)
    _reset_peak(device)
    trainer = Trainer(resolved, PreparedSet.open(prepared).tensor(), torch.device(device))
    started = time.perf_counter()
    for _ in range(warmup):
        trainer.train_epoch()
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.train_epoch()
    _sync(device)
    seconds = time.perf_counter() - start
    return throughput(epochs * trainer.images.shape[0], seconds, start - started, device), trainer


def state_mib(state) -> float:
    """The tensors in a (nested) state dict, in MiB: what a checkpoint of it writes, about."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / 2**20
    if isinstance(state, dict):
        return sum(state_mib(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(state_mib(v) for v in state)
    return 0.0


def bookkeeping(trainer: Trainer, folder: Path) -> dict:
    """What a heartjobs job adds every checkpoint_every and sample_every epochs (10 by default): a checkpoint
    (model and optimizer states, written and fsynced) and a sample grid with the loss plot."""
    start = time.perf_counter()
    path = save_checkpoint(folder / "checkpoints", trainer.state_dict(), "gpu_bench", keep=1)
    checkpoint_s = time.perf_counter() - start
    checkpoint_mib = path.stat().st_size / 2**20
    path.unlink()
    start = time.perf_counter()
    save_grid(trainer.samples().numpy(), folder / "samples.png")
    plot_losses(trainer.history, folder / "losses.png", "gpu_bench")
    return {
        "checkpoint_s": round(checkpoint_s, 3),
        "checkpoint_mib": round(checkpoint_mib, 1),
        "samples_s": round(time.perf_counter() - start, 3),
        "measured": True,
    }


def scaled_bookkeeping(measured: dict, trainer: Trainer) -> dict:
    """Another configuration of the same model: its checkpoint time scaled by its checkpoint's size (writing
    each one, up to 1.2 GB fsynced, would cost more device time than it tells)."""
    mib = state_mib(trainer.state_dict())
    return {
        "checkpoint_s": round(measured["checkpoint_s"] * mib / measured["checkpoint_mib"], 3),
        "checkpoint_mib": round(mib, 1),
        "samples_s": measured["samples_s"],
        "measured": False,
    }


def eval_generator(trainer: Trainer, device: str) -> torch.nn.Module:
    """The trained generator as an evaluation gets it: rebuilt from its state dict, in eval mode."""
    spec = trainer.spec
    architecture = {
        "model": spec.model,
        "size": spec.data.size,
        "channels": spec.data.channels,
        "latent_dim": spec.train.latent_dim,
        "batchnorm_eps": spec.train.batchnorm_eps,
    }
    return build_generator(architecture, trainer.G.state_dict(), device)


def switch_run(prepared: Path, folder: Path, train: dict, warmup: int, epochs: int, device: str, fid: tuple) -> dict:
    """A DCGAN trained with these [train] values, timed, then its generator's FID (heartjobs_fid's `fid`)."""
    run, trainer = heartjobs_route(prepared, folder, "dcgan", train, warmup, epochs, device)
    generator = eval_generator(trainer, device)
    del trainer
    run["fid"] = heartjobs_fid(generator, *fid)["fid_mean"]
    return run


# --- FID ---


def heartjobs_fid(
    generator: torch.nn.Module, latent_dim: int, prepared: Path, weights: Path, n: int, repeats: int, dims: int, device
) -> dict:
    """heartjobs' evaluation (FID only, per-image min-max as the thesis jobs set), timed."""
    settings = EvalSection(
        n_generated=n,
        repeats=repeats,
        dims=dims,
        weights=str(weights),
        normalize="per_image_minmax",
        kid=False,
        frd=False,
    )
    _sync(device)
    start = time.perf_counter()
    result = measure(generator, latent_dim, PreparedSet.open(prepared), settings, torch.device(device))
    _sync(device)
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "fid_mean": round(result["fid_mean"], 4),
        "fid_std": round(result["fid_std"], 4),
        "n_generated": n,
        "repeats": repeats,
        "dims": dims,
        "n_real": result["n_real"],
        "real_statistics_cached": result["real_statistics"]["from_cache"],
    }


def thesis_fid_figures(run: dict) -> dict:
    """One repeat of the thesis' FID (thesis_pipeline.fid_repeat) as the JSON has it."""
    return {
        "generate_and_save_s": round(run["generate_and_save_s"], 3),
        "cli_s": round(run["cli_s"], 3),
        "seconds": round(run["generate_and_save_s"] + run["cli_s"], 3),
        "fid": round(run["fid"], 4),
        "n_generated": run["n_generated"],
        "n_real": run["n_real"],
        "dims": run["dims"],
    }


def kid_repeat_seconds(n_real: int, n_generated: int, dims: int, settings: EvalSection) -> float:
    """One repeat's KID at these sizes (random features: the cost depends on the shapes alone)."""
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((n_real, dims)), rng.standard_normal((n_generated, dims))
    start = time.perf_counter()
    kernel_inception_distance(real, fake, subsets=settings.kid_subsets, subset_size=settings.kid_subset_size)
    return round(time.perf_counter() - start, 4)


# --- the projection ---


def project(jobs: list[dict], results: dict) -> dict:
    """The 21 jobs at their epochs over THESIS_IMAGES images, with their evaluation, at the measured rates."""
    rates = {(r["model"], r["batch_size"], r["latent_dim"]): r for r in results["training"]}
    fid = results["fid"]
    ours, theirs = fid["heartjobs_cached"], fid.get("thesis_repeat")
    rows = []
    for job in jobs:
        rate = rates[(job["model"], job["batch_size"], job["latent_dim"])]
        images = job["epochs"] * THESIS_IMAGES
        settings = job["eval"]
        # heartjobs: FID scaled from the measured n and repeats; KID per repeat measured at thesis sizes
        per_image = ours["seconds"] / (ours["n_generated"] * ours["repeats"])
        eval_s = settings.repeats * (settings.n_generated * per_image + (fid["kid_repeat_s"] if settings.kid else 0))
        keeping = rate["heartjobs"]["bookkeeping"]
        row = {
            "job": job["name"],
            "model": job["model"],
            "batch_size": job["batch_size"],
            "latent_dim": job["latent_dim"],
            "epochs": job["epochs"],
            "heartjobs_train_s": round(images / rate["heartjobs"]["images_per_s"], 1),
            "heartjobs_bookkeeping_s": round(
                job["epochs"] // job["checkpoint_every"] * keeping["checkpoint_s"]
                + job["epochs"] // job["sample_every"] * keeping["samples_s"],
                1,
            ),
            "heartjobs_eval_s": round(eval_s, 1),
            "thesis_train_s": round(images / rate["thesis"]["images_per_s"], 1),
        }
        if theirs is not None:  # per repeat: generation per image, the CLI scaled by the images it reads
            generate_s = theirs["generate_and_save_s"] / theirs["n_generated"] * settings.n_generated
            read = THESIS_IMAGES + settings.n_generated
            cli_s = theirs["cli_s"] / (theirs["n_real"] + theirs["n_generated"]) * read
            row["thesis_eval_s"] = round(settings.repeats * (generate_s + cli_s), 1)
        rows.append(row)
    real_once = (fid["heartjobs_cold"]["seconds"] - ours["seconds"]) / fid["heartjobs_cold"]["n_real"] * THESIS_IMAGES
    totals = {
        "heartjobs_s": round(
            sum(r["heartjobs_train_s"] + r["heartjobs_bookkeeping_s"] + r["heartjobs_eval_s"] for r in rows)
            + max(0.0, real_once),
            1,
        ),
        "heartjobs_real_statistics_once_s": round(max(0.0, real_once), 1),
        "thesis_train_s": round(sum(r["thesis_train_s"] for r in rows), 1),
        "heartjobs_train_s": round(sum(r["heartjobs_train_s"] for r in rows), 1),
    }
    if theirs is not None:
        totals["thesis_s"] = round(sum(r["thesis_train_s"] + r["thesis_eval_s"] for r in rows), 1)
        totals["ratio"] = round(totals["thesis_s"] / totals["heartjobs_s"], 3)
    return {
        "jobs": rows,
        "totals": totals,
        "images_per_epoch": THESIS_IMAGES,
        "excluded": "process start-up per job; FRD (CPU work with pyradiomics: not measured here); the thesis' "
        "eval assumes the measured generator's (DCGAN's) per-image generation cost for every model",
    }


# --- output ---


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def print_tables(results: dict) -> None:
    console = Console(width=150)
    device = results["device"]
    console.print(
        f"[bold]gpu-bench[/bold] on {device['name']} (torch {device['torch']}, CUDA {device['cuda']}), "
        f"{results['sizes']['size']} px, {results['sizes']['images']} phantom slices; FID weights: "
        f"{results['weights']['kind']}"
    )
    table = Table(title="Training throughput, the thesis' precision (TF32 convolutions, FP32 matmuls)")
    for column in ("model", "batch", "latent", "jobs", "thesis img/s", "heartjobs img/s", "ratio", "thesis MiB",
                   "heartjobs MiB", "images timed"):  # fmt: skip
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results["training"]:
        table.add_row(
            r["model"],
            str(r["batch_size"]),
            str(r["latent_dim"]),
            str(len(r["jobs"])),
            f"{r['thesis']['images_per_s']:,.0f}",
            f"{r['heartjobs']['images_per_s']:,.0f}",
            f"{r['ratio']:.2f}x",
            str(r["thesis"]["peak_gpu_mib"] or "-"),
            str(r["heartjobs"]["peak_gpu_mib"] or "-"),
            str(r["thesis"]["images"]),
        )
    console.print(table)

    sw = results.get("switches")
    if sw:
        table = Table(
            title=f"Speed switches: {sw['model']}, batch {sw['batch_size']}, {sw['epochs']} epochs after "
            f"{sw['warmup_epochs']} warm-up; FID of that short run, n={sw['fid_n']}, {sw['fid_dims']}-d, one repeat"
        )
        for column in ("setting", "img/s", "vs thesis-exact", "first epoch s", "peak MiB", "FID", "FID - exact"):
            table.add_column(column, justify="left" if column == "setting" else "right")
        base = sw["settings"].get("thesis_exact", {})
        for name, s in sw["settings"].items():
            if "error" in s:
                table.add_row(name, "failed", one_line(s["error"], 60), "", "", "", "")
                continue
            delta = s["fid"] - base["fid"] if "fid" in base else None
            table.add_row(
                name,
                f"{s['images_per_s']:,.0f}",
                f"{s.get('ratio', 1.0):.2f}x",
                f"{s['warmup_s']:.1f}",
                str(s["peak_gpu_mib"] or "-"),
                f"{s['fid']:.3f}",
                "" if name == "thesis_exact" or delta is None else f"{delta:+.3f}",
            )
        console.print(table)

    fid = results.get("fid")
    if fid:
        cold, cached = fid["heartjobs_cold"], fid["heartjobs_cached"]
        console.print(
            f"FID, heartjobs ({cached['repeats']} x {cached['n_generated']} generated vs {cached['n_real']} real, "
            f"{cached['dims']}-d): {cold['seconds']:.1f} s with the real statistics computed, "
            f"{cached['seconds']:.1f} s cached; FID {cached['fid_mean']:.3f} +- {cached['fid_std']:.3f}"
        )
        thesis = fid.get("thesis_repeat")
        if thesis:
            console.print(
                f"FID, thesis route, one repeat ({thesis['n_generated']} generated one by one + pytorch-fid CLI vs "
                f"{thesis['n_real']} real): {thesis['generate_and_save_s']:.1f} s generating and saving, "
                f"{thesis['cli_s']:.1f} s CLI; FID {thesis['fid']:.3f}"
            )
        else:
            console.print(f"FID, thesis route: not measured ({fid.get('thesis_error', 'skipped')})")
        console.print(f"KID, one repeat at the thesis' sizes: {fid['kid_repeat_s']:.2f} s")

    proj = results.get("projection")
    if proj:
        table = Table(
            title=f"Projection: the 21 thesis jobs, {proj['jobs'][0]['epochs']} epochs x {proj['images_per_epoch']} "
            "images, with evaluation"
        )
        for column in ("model", "jobs", "thesis train", "thesis eval", "heartjobs train", "checkpoints+samples",
                       "heartjobs eval"):  # fmt: skip
            table.add_column(column, justify="left" if column == "model" else "right")
        for model in ("gan", "wgan", "dcgan", "all"):
            rows = [r for r in proj["jobs"] if model in (r["model"], "all")]
            table.add_row(
                model,
                str(len(rows)),
                _h(sum(r["thesis_train_s"] for r in rows)),
                _h(sum(r["thesis_eval_s"] for r in rows)) if "thesis_eval_s" in rows[0] else "-",
                _h(sum(r["heartjobs_train_s"] for r in rows)),
                _h(sum(r["heartjobs_bookkeeping_s"] for r in rows)),
                _h(sum(r["heartjobs_eval_s"] for r in rows)),
            )
        console.print(table)
        t = proj["totals"]
        line = f"Whole matrix: heartjobs {_h(t['heartjobs_s'])} (real statistics once included)"
        if "thesis_s" in t:
            line += f", thesis pipeline {_h(t['thesis_s'])}: {t['ratio']:.2f}x"
        console.print(line + f". Not included: {proj['excluded']}.")


# --- the run ---


def main() -> None:
    """Budget on one H100, estimated from docs/performance.md's H200 rates (phases_s in the JSON has the
    measured times): imports and weights 15 s, set-up 20 s, training (15 configurations x 2 routes) 90 s, FID
    40 s, the thesis' FID 30 s, the switches 30 s plus torch.compile's compilation (about 1 minute): about
    5 minutes, 8 at worst."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the CPU's default); explicit options win")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA, at toy sizes (--tiny)")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_bench.json", help="the JSON file written")
    parser.add_argument("--size", type=int, help="image size (256)")
    parser.add_argument("--images", type=int, help="phantom slices in the training set (512)")
    parser.add_argument("--warmup-epochs", type=int, help="untimed epochs before each timing (1)")
    parser.add_argument("--mlp-epochs", type=int, help="timed epochs per GAN/WGAN configuration (8)")
    parser.add_argument("--dcgan-epochs", type=int, help="timed epochs per DCGAN configuration (4)")
    parser.add_argument("--fid-n", type=int, help="generated images per FID repeat (3000)")
    parser.add_argument("--fid-repeats", type=int, help="FID repeats (3)")
    parser.add_argument("--fid-dims", type=int, choices=(64, 192, 768, 2048), help="Inception features (2048)")
    parser.add_argument("--switch-epochs", type=int, help="timed epochs of each speed-switch run (6)")
    parser.add_argument("--switch-fid-n", type=int, help="generated images of each speed-switch run's FID (1000)")
    parser.add_argument("--switches", help="comma-separated, of tf32,bf16,compile,phase_conv; 'none' for none")
    parser.add_argument("--no-thesis-fid", action="store_true", help="skip the thesis' FID route")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    profile = "tiny" if args.tiny or not cuda else "gpu"  # the CPU gets toy sizes unless told otherwise
    for key, value in PROFILES[profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    switches = [s for s in args.switches.split(",") if s and s != "none"]
    unknown = sorted(set(switches) - set(SWITCHES))
    if unknown:
        parser.error(f"--switches: unknown {', '.join(unknown)} (known: {', '.join(SWITCHES)})")
    if not cuda and not args.allow_cpu:
        raise SystemExit("gpu-bench: no CUDA device here (pass --allow-cpu to try it on the CPU at toy sizes)")
    device = "cuda" if cuda else "cpu"
    started = time.perf_counter()

    try:
        weights = resolve_weights("standard", download=False)
    except HeartjobsError:
        weights = resolve_weights("untrained")  # from heartjobs' usual cache: made once, about 96 MB
    jobs = thesis_matrix()
    configs = configurations(jobs)
    results: dict = {
        "bench": "gpu_bench",
        "complete": False,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": {
            "kind": device,
            "name": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "sizes": {k: getattr(args, k) for k in PROFILES["gpu"]} | {"profile": profile, "thesis_images": THESIS_IMAGES},
        "weights": {
            "kind": weights.kind if weights.standard else "untrained",
            "sha256": weights.sha256,
            "standard": weights.standard,
            "path": str(weights.path),
        },
        "phases_s": {},
    }

    phase_done = phase_recorder(results, args.out, started)

    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        # the real statistics start cold: measure in a cache of this run's own (the weights stay where they are)
        os.environ["HEARTJOBS_CACHE"] = str(tmp / "cache")
        start = time.perf_counter()
        prepared = phantom_set(tmp, args.images, args.size)
        imagefolder = prepared / "imagefolder"
        phase_done("setup", start)

        # 1. training throughput, both pipelines, every configuration of the matrix
        start = time.perf_counter()
        results["training"] = []
        written: dict[str, dict] = {}  # one checkpoint written per model; the others scaled by size
        for config in configs:
            model = config["model"]
            epochs = args.dcgan_epochs if model == "dcgan" else args.mlp_epochs
            label = f"{model} batch {config['batch_size']} latent {config['latent_dim']}"
            _reset_peak(device)
            timed = thesis_pipeline.train(imagefolder, args.size, model, config["batch_size"], config["latent_dim"],
                                          args.warmup_epochs, epochs, device, tmp / "thesis_samples")  # fmt: skip
            thesis = throughput(timed["images"], timed["seconds"], timed["warmup_s"], device)
            train = {**config["train"], "batch_size": config["batch_size"], "latent_dim": config["latent_dim"]}
            ours, trainer = heartjobs_route(prepared, tmp / "hj", model, train, args.warmup_epochs, epochs, device)
            if model in written:
                ours["bookkeeping"] = scaled_bookkeeping(written[model], trainer)
            else:
                ours["bookkeeping"] = written[model] = bookkeeping(trainer, tmp / "hj")
            del trainer
            row = {k: config[k] for k in ("model", "batch_size", "latent_dim", "jobs")}
            row["precision"] = {k: train.get(k, COMMON_DEFAULTS[k]) for k in THESIS_PRECISION}
            ratio = round(ours["images_per_s"] / thesis["images_per_s"], 3)
            row |= {"thesis": thesis, "heartjobs": ours, "ratio": ratio}
            results["training"].append(row)
            _say(
                f"{label:28s} thesis {thesis['images_per_s']:9.1f} img/s  heartjobs {ours['images_per_s']:9.1f} "
                f"img/s  {row['ratio']:.2f}x  peak MiB {thesis['peak_gpu_mib']} / {ours['peak_gpu_mib']}"
            )
        phase_done("training", start)

        # 2. FID: heartjobs at the thesis' sizes (a DCGAN trained a few epochs), then the thesis' route
        start = time.perf_counter()
        base = {**THESIS_PRECISION, "batch_size": 64, "latent_dim": 100}
        run, trainer = heartjobs_route(
            prepared, tmp / "switch_thesis_exact", "dcgan", base, args.warmup_epochs, args.switch_epochs, device
        )
        generator = eval_generator(trainer, device)
        del trainer
        fid_args = (100, prepared, weights.path, args.fid_n, args.fid_repeats, args.fid_dims, device)
        results["fid"] = {
            "heartjobs_cold": heartjobs_fid(generator, *fid_args),
            "heartjobs_cached": heartjobs_fid(generator, *fid_args),
            "kid_repeat_s": kid_repeat_seconds(THESIS_IMAGES, args.fid_n, args.fid_dims, EvalSection()),
        }
        phase_done("fid", start)
        if not args.no_thesis_fid:
            start = time.perf_counter()
            try:
                # numpy's noise, as the thesis' script drew it (this FID is not compared with heartjobs')
                repeat = thesis_pipeline.fid_repeat(
                    generator, 100, prepared / "png", args.fid_n, args.fid_dims, weights.path, device, tmp
                )
                results["fid"]["thesis_repeat"] = thesis_fid_figures(repeat)
            except HeartjobsError as exc:
                results["fid"]["thesis_error"] = str(exc)
                _say(f"thesis FID route failed: {exc}")
            phase_done("thesis_fid", start)
        results["projection"] = project(jobs, results)
        _write_json(args.out, results)

        # 3. the speed switches against the thesis-exact setting (DCGAN, batch 64), each with its short run's FID
        start = time.perf_counter()
        fid_short = (100, prepared, weights.path, args.switch_fid_n, 1, args.fid_dims, device)
        sw = {"model": "dcgan", "batch_size": 64, "latent_dim": 100, "warmup_epochs": args.warmup_epochs,
              "epochs": args.switch_epochs, "fid_n": args.switch_fid_n, "fid_dims": args.fid_dims, "seed": 0,
              "cuda_graphs": "not offered by heartjobs' [train] switches; not measured", "settings": {}}  # fmt: skip
        sw["settings"]["thesis_exact"] = {**run, "fid": heartjobs_fid(generator, *fid_short)["fid_mean"]}
        del generator
        results["switches"] = sw
        for name in switches:
            try:
                train = {**base, **SWITCHES[name]}
                run = switch_run(prepared, tmp / f"switch_{name}", train, args.warmup_epochs, args.switch_epochs,
                                 device, fid_short)  # fmt: skip
                run["ratio"] = round(run["images_per_s"] / sw["settings"]["thesis_exact"]["images_per_s"], 3)
                sw["settings"][name] = run
                _say(f"switch {name}: {run['images_per_s']:.1f} img/s ({run['ratio']:.2f}x), FID {run['fid']:.3f}")
            except Exception as exc:  # e.g. torch.compile without a C compiler: say so, keep the rest
                sw["settings"][name] = {"error": one_line(exc, 300, with_type=True)}
                _say(f"switch {name} failed: {one_line(exc, 300, with_type=True)}")
        phase_done("switches", start)

    results["seconds_total"] = round(time.perf_counter() - started, 1)
    results["complete"] = True
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json(args.out, results)
    print_tables(results)
    _say(f"wrote {args.out} ({results['seconds_total']} s)")


if __name__ == "__main__":
    main()
