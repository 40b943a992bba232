"""GPU study: the thesis' 21 jobs shortened to a few epochs, run through the real queue and worker with their
full evaluation, timed per job, and the real matrix (200 epochs over 3,307 slices) projected from them with
and without each speed switch (`make gpu-study`).

In one run, on a prepared phantom at the thesis' size (256 px):

- DCGAN's images/s with and without [train] phase_conv, side by side (same data, batch, latent dim).
- The jobs of jobs/thesis.sweep.toml (all 21, or --jobs), each at --epochs epochs, queued and run by
  heartjobs.queue's Worker (a `heartjobs run` child per job) with the thesis' evaluation (FID at 2048-d,
  KID, FRD and the rest of [eval]'s defaults) at a reduced n (stated). Per job, from what the queue and the
  run folder record: training seconds (the epochs' own seconds in losses.jsonl), evaluation seconds (the
  queue outcome's evaluation_s where the worker runs evaluations apart, else fid.json's seconds), start-up
  (the job's wall time less the two: process start, imports, data, model, checkpoints and grids), and the
  worker's wall time against the sum of the jobs' (what overlapped evaluation gained: Worker(overlap=1)).
- Checkpoint and sample-grid cost per job: one synchronous save_checkpoint (written and fsynced) of each
  model's first job's state as its run left it, with its grid and loss plot, timed here; the model's other
  jobs scaled by their checkpoint's size. With background writes only the copy of the state to (pinned) host
  memory and the grid's generation stay on the critical path: both timed too.
- The projection of the 21 jobs at 200 epochs x 3,307 slices: training at the measured images/s,
  checkpoints and grids every 10 epochs, start-up, and evaluation scaled from the study's n to the job's own
  (3 x 3000 by default), with today's path, + phase_conv, + background checkpoints, + overlapped
  evaluation, and all of them together.

Writes one JSON file: on a GPU bench/recorded/gpu_study_<date>_<card>.json (as the other recorded runs are
named), at toy sizes bench/results/gpu_study.json (--out either way), rewritten after each phase. Without
CUDA, `--allow-cpu` runs it at toy sizes (`--tiny` picks those anywhere); CI runs that, so it never rots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import tomli_w
import torch
from gpu_bench import (
    SWEEP,
    THESIS_IMAGES,
    _h,
    _reset_peak,
    _say,
    _sync,
    _write_json,
    bookkeeping,
    heartjobs_route,
    phantom_prepared,
    phase_recorder,
    thesis_matrix,
)
from results_log import RESULTS
from rich.console import Console
from rich.table import Table

from heartjobs.errors import HeartjobsError
from heartjobs.evaluation.weights import resolve_weights
from heartjobs.queue.folders import Queue
from heartjobs.queue.worker import Worker
from heartjobs.runner.training import newest_checkpoint
from heartjobs.spec.defaults import train_defaults
from heartjobs.spec.loading import load_spec
from heartjobs.spec.sweep import expand, load_sweep
from heartjobs.store.background import host_copy as background_host_copy
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.rundir import RunDir
from heartjobs.system import locks
from heartjobs.training.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "bench" / "recorded"
THESIS_EPOCHS = 200
PROFILES = {
    # one H100 or H200: about 8 minutes (main()'s docstring has the budget)
    "gpu": {
        "size": 256,
        "images": 512,
        "epochs": 2,
        "n": 1000,
        "repeats": 3,
        "dims": 2048,
        "pair_epochs": 3,
        "jobs": "all",
    },
    # the CPU, in CI: one job per model at toy sizes, about a minute on 2 cores
    "tiny": {
        "size": 32,
        "images": 64,
        "epochs": 2,
        "n": 50,
        "repeats": 1,
        "dims": 64,
        "pair_epochs": 1,
        "jobs": "gan_default,wgan_default,dcgan_default",
    },
}
BOOKKEEPING_HOW = (
    "one synchronous save_checkpoint (written and fsynced) of the state the model's first job's run left, with "
    "its sample grid and loss plot, timed in this process; the model's other jobs scaled by their checkpoint "
    "file's size. Background: the copy of the state to the host (heartjobs.store.background.host_copy where "
    "this heartjobs has it, else into pinned buffers allocated beforehand; a plain copy on the CPU) and the "
    "grid's generation (Trainer.samples) stay on the critical path, the writes do not, but for the last "
    "checkpoint's, which the end of training waits for"
)


def card_slug(name: str) -> str:
    """A card's short name for file names: 'NVIDIA H100 80GB HBM3' -> 'h100', else the name made safe."""
    found = re.search(r"\b([a-z]{1,2}\d{2,4}[a-z]?)\b", name.lower())
    return found.group(1) if found else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


# --- phase_conv side by side ---


def phase_conv_pair(prepared: Path, folder: Path, epochs: int, device: str) -> dict:
    """DCGAN at its default batch and latent dim, the thesis' precision, with and without [train] phase_conv:
    one warm-up epoch each, then `epochs` timed."""
    dcgan = train_defaults("dcgan")
    base = {"tf32": "convolutions", "batch_size": dcgan["batch_size"], "latent_dim": dcgan["latent_dim"]}
    pair = {"model": "dcgan", "batch_size": base["batch_size"], "latent_dim": base["latent_dim"], "epochs": epochs}
    for name, train in (("plain", base), ("phase_conv", {**base, "phase_conv": True})):
        run, trainer = heartjobs_route(prepared, folder / name, "dcgan", train, 1, epochs, device)
        del trainer
        pair[name] = run
    _reset_peak(device)  # the study's cached GPU memory freed for the jobs' children
    pair["ratio"] = round(pair["phase_conv"]["images_per_s"] / pair["plain"]["images_per_s"], 3)
    return pair


# --- the jobs through the queue ---


def study_specs(names: list[str], folder: Path, args, prepared: Path, weights: Path) -> dict[str, Path]:
    """The chosen jobs of the thesis' sweep as spec files: the sweep's own [train] and [eval], on the phantom,
    at --epochs epochs, measured at the study's n."""
    expanded = expand(load_sweep(SWEEP), SWEEP)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        spec = expanded[name]
        spec["data"] = {**spec.get("data", {}), "prepared": str(prepared)}
        spec["train"] = {**spec.get("train", {}), "epochs": args.epochs}
        spec["eval"] = {
            **spec.get("eval", {}),
            "n_generated": args.n,
            "repeats": args.repeats,
            "dims": args.dims,
            "weights": str(weights),
            "kid_subset_size": min(1000, args.n),
            "frd_n": min(1000, args.n),
            "ms_ssim_pairs": min(1000, args.n),
        }
        spec["output"] = {"root": str(folder.parent / "artifacts")}
        paths[name] = folder / f"{name}.toml"
        paths[name].write_text(tomli_w.dumps(spec))
    return paths


def run_queue(paths: dict[str, Path], root: Path) -> dict:
    """Every spec queued in order, then one worker until the queue is empty, timed."""
    queue = Queue(root)
    for path in paths.values():
        queue.add(path)
    options = {"overlap": 1}  # one job measured while the next trains
    worker = Worker(queue, **options)
    start = time.perf_counter()
    counts = worker.serve()
    return {"wall_s": round(time.perf_counter() - start, 2), "counts": counts, "options": options, "slot": worker.slot}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_figures(queue_root: Path) -> dict[str, dict]:
    """Per job, from its queue outcome and run folder: its seconds (job_s) split into training (the epochs'
    own seconds), evaluation and start-up (the rest), the steady images/s (the epochs after the first where
    there are several: the first warms cuDNN up), and what it measured."""
    jobs = {}
    for state in ("done", "failed"):
        for entry in Queue(queue_root).entries(state):
            outcome = json.loads(entry.sidecar("json").read_text())
            row = {"state": outcome.get("state"), "wall_s": outcome.get("seconds")}
            if state == "failed" or outcome.get("state") != "done":
                jobs[entry.name] = row | {"job_s": outcome.get("seconds"), "error": outcome.get("error") or
                                          outcome.get("reason")}  # fmt: skip
                continue
            run = Path(outcome["run_dir"])
            epochs = _lines(run / RunDir.LOSSES)
            steady = epochs[1:] or epochs
            fid = json.loads((run / RunDir.FID_REPORT).read_text())
            training_s = sum(e["seconds"] for e in epochs)
            # The worker's outcome, where it has them: training_s, the training child's wall seconds, and
            # evaluation_s, the separate evaluation child's (None: measured inside the training child). With
            # evaluations overlapped the outcome's own seconds span the wait for the next job, so a job's
            # time is its children's where they are recorded.
            child_s, apart_s = outcome.get("training_s"), outcome.get("evaluation_s")
            evaluation_s = fid["seconds"] if apart_s is None else apart_s
            job_s = outcome["seconds"] if child_s is None else child_s + (apart_s or 0.0)
            row |= {
                "run_dir": str(run),
                "epochs": len(epochs),
                "images_per_s": round(sum(e["images_per_s"] for e in steady) / len(steady), 2),
                "job_s": round(job_s, 3),
                "training_s": round(training_s, 3),
                "training_child_s": child_s,
                "evaluation_s": round(evaluation_s, 3),
                "evaluation_apart": apart_s is not None,
                "measure_s": fid["seconds"],  # the measurement alone (heartjobs.evaluation.driver.measure)
                "startup_s": round(max(0.0, job_s - training_s - evaluation_s), 3),
                "n_generated": fid["n_generated"],
                "repeats": len(fid["repeats"]),
                "dims": fid["dims"],
                "real_statistics_cached": fid["real_statistics"]["from_cache"],
                "fid": round(fid["fid_mean"], 4),
                "kid": round(fid["kid_mean"], 6) if "kid_mean" in fid else None,
                "frd": (fid.get("frd") or {}).get("mean"),
                "frd_error": (fid.get("frd") or {}).get("error"),
                "frd_backend": (fid.get("frd") or {}).get("backend"),
            }
            jobs[entry.name] = row
    return jobs


# --- checkpoints and grids ---


def host_copy_s(state, device: str) -> float:
    """The copy of a state to host memory that stays on the critical path with background writes
    (heartjobs.store.background.host_copy: fresh pinned tensors on a GPU, a deep copy), timed."""
    _sync(device)
    start = time.perf_counter()
    background_host_copy(state, torch.device(device))
    _sync(device)
    return time.perf_counter() - start


def checkpoint_costs(jobs: dict[str, dict], paths: dict[str, Path], prepared: Path, folder: Path, device: str):
    """Per done job: its checkpoint and grid cost, synchronous and with background writes (BOOKKEEPING_HOW)."""
    images = PreparedSet.open(prepared).tensor()
    measured: dict[str, dict] = {}
    costs = {}
    for name, row in jobs.items():
        if row["state"] != "done":
            continue
        spec = load_spec(paths[name])
        path, state = newest_checkpoint(RunDir(Path(row["run_dir"])), spec)
        mib = path.stat().st_size / 2**20
        if spec.model not in measured:
            trainer = Trainer(spec, images, torch.device(device))
            trainer.load_state_dict(state)
            figures = bookkeeping(trainer, folder / name)
            state = trainer.state_dict()  # on the device, as a background writer would find it
            figures["host_copy_s"] = round(host_copy_s(state, device), 4)
            _sync(device)
            start = time.perf_counter()
            trainer.samples()
            _sync(device)
            figures["samples_host_s"] = round(time.perf_counter() - start, 4)
            figures["checkpoint_file_mib"] = round(mib, 1)
            measured[spec.model] = figures
            del trainer
            costs[name] = figures
        else:
            base = measured[spec.model]
            scale = mib / base["checkpoint_file_mib"]
            costs[name] = {
                "checkpoint_s": round(base["checkpoint_s"] * scale, 4),
                "checkpoint_file_mib": round(mib, 1),
                "samples_s": base["samples_s"],
                "host_copy_s": round(base["host_copy_s"] * scale, 4),
                "samples_host_s": base["samples_host_s"],
                "measured": False,
            }
        del state
    return costs


# --- the projection ---


def source_job(job: dict, jobs: dict[str, dict]) -> str | None:
    """The study's job a thesis job is projected from: itself, else one of the same model, batch size and
    latent dim, else the model's first (a --jobs subset: its rate is then another batch size's)."""
    done = {name: row for name, row in jobs.items() if row["state"] == "done"}
    if job["name"] in done:
        return job["name"]
    same = [n for n, r in done.items() if r.get("config") == [job["model"], job["batch_size"], job["latent_dim"]]]
    model = [n for n, r in done.items() if r.get("model") == job["model"]]
    return (same or model or [None])[0]


def project(matrix: list[dict], jobs: dict, costs: dict, pair: dict) -> dict:
    """The thesis matrix at THESIS_EPOCHS x THESIS_IMAGES, per job and in total, under each switch."""
    rows = []
    for job in matrix:
        source = source_job(job, jobs)
        if source is None:
            raise SystemExit(f"gpu-study: no {job['model']} job finished; nothing to project {job['name']} from")
        run, cost = jobs[source], costs[source]
        checkpoints = THESIS_EPOCHS // job["checkpoint_every"]
        grids = THESIS_EPOCHS // job["sample_every"]
        train_s = THESIS_EPOCHS * THESIS_IMAGES / run["images_per_s"]
        # the study's run wrote one checkpoint and one grid (its last epoch) inside its start-up
        startup_s = max(0.0, run["startup_s"] - cost["checkpoint_s"] - cost["samples_s"])
        scale = job["eval"].n_generated * job["eval"].repeats / (run["n_generated"] * run["repeats"])
        rows.append(
            {
                "job": job["name"],
                "model": job["model"],
                "from": source,
                "images_per_s": run["images_per_s"],
                "train_s": round(train_s, 1),
                "train_phase_conv_s": round(train_s / pair["ratio"] if job["model"] == "dcgan" else train_s, 1),
                "bookkeeping_s": round(checkpoints * cost["checkpoint_s"] + grids * cost["samples_s"], 1),
                "bookkeeping_background_s": round(
                    checkpoints * cost["host_copy_s"] + grids * cost["samples_host_s"] + cost["checkpoint_s"], 1
                ),
                "startup_s": round(startup_s, 1),
                # the measurement scales with the images; loading the generator and the feature network (and,
                # evaluated apart, a child's start-up) does not
                "eval_s": round(run["measure_s"] * scale + run["evaluation_s"] - run["measure_s"], 1),
                "eval_scale": round(scale, 3),
            }
        )
    variants = {
        "today": {},
        "phase_conv": {"phase_conv": True},
        "background_checkpoints": {"background": True},
        "overlap": {"overlap": True},
        "all": {"phase_conv": True, "background": True, "overlap": True},
    }
    totals = {name: matrix_time(rows, **switches) for name, switches in variants.items()}
    return {
        "jobs": rows,
        "totals": totals,
        "epochs": THESIS_EPOCHS,
        "images_per_epoch": THESIS_IMAGES,
        "evaluation": "the study's measurement (FID, KID, FRD and [eval]'s other defaults at its n: fid.json's "
        "seconds) scaled linearly by the job's n_generated x repeats over the study's, plus the rest of its "
        "evaluation time unscaled (loading; a separate child's start-up); FRD's and KID's subsets are "
        "capped at 1000 images, so this overstates them a little; the first job's includes the real set's "
        "statistics (once per matrix)",
        "overlap": "one evaluation in flight: job i's evaluation hidden behind job i+1's training, start-up and "
        "checkpoints, the excess on the critical path, the last job's evaluation in full; the GPU shared by "
        "the two is not modelled",
        "bookkeeping": BOOKKEEPING_HOW,
    }


def matrix_time(rows: list[dict], *, phase_conv=False, background=False, overlap=False) -> dict:
    """The matrix's critical path in seconds with these switches, by part."""
    train = [r["train_phase_conv_s"] if phase_conv else r["train_s"] for r in rows]
    keeping = [r["bookkeeping_background_s"] if background else r["bookkeeping_s"] for r in rows]
    startup = [r["startup_s"] for r in rows]
    evaluation = [r["eval_s"] for r in rows]
    if overlap:
        busy = [t + k + s for t, k, s in zip(train, keeping, startup, strict=True)]
        waited = [max(0.0, e - nxt) for e, nxt in zip(evaluation[:-1], busy[1:], strict=True)] + evaluation[-1:]
    else:
        waited = evaluation
    parts = {
        "train_s": sum(train),
        "bookkeeping_s": sum(keeping),
        "startup_s": sum(startup),
        "eval_s": sum(waited),
    }
    return {k: round(v, 1) for k, v in parts.items()} | {"total_s": round(sum(parts.values()), 1)}


# --- output ---


def print_tables(results: dict) -> None:
    console = Console(width=150)
    device, sizes = results["device"], results["sizes"]
    console.print(
        f"[bold]gpu-study[/bold] on {device['name']} (torch {device['torch']}, CUDA {device['cuda']}), "
        f"{sizes['size']} px, {sizes['images']} phantom slices, {sizes['epochs']} epochs per job"
    )
    console.print(
        f"evaluation: {sizes['repeats']} x {sizes['n']} generated at {sizes['dims']}-d, KID, FRD, FID weights "
        f"{results['weights']['kind']}"
    )
    pair = results.get("phase_conv")
    if pair:
        console.print(
            f"phase_conv, DCGAN batch {pair['batch_size']} over {pair['epochs']} epochs: "
            f"{pair['plain']['images_per_s']:,.0f} img/s plain, {pair['phase_conv']['images_per_s']:,.0f} with: "
            f"{pair['ratio']:.2f}x"
        )
    queue = results.get("queue")
    if queue:
        table = Table(title="The study's jobs through the queue and worker (seconds)")
        for column in ("job", "state", "img/s", "training", "evaluation", "start-up", "wall", "checkpoint",
                       "grid", "host copy", "FID", "FRD"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("job", "state") else "right")
        for name, r in results["jobs"].items():
            if r["state"] != "done":
                table.add_row(name, str(r["state"]), "", "", "", "", str(r["wall_s"]), "", "", "", "", "")
                continue
            c = results["checkpoints"][name]
            table.add_row(
                name,
                "done",
                f"{r['images_per_s']:,.0f}",
                f"{r['training_s']:.1f}",
                f"{r['evaluation_s']:.1f}",
                f"{r['startup_s']:.1f}",
                f"{r['wall_s']:.1f}",
                f"{c['checkpoint_s']:.2f}" + ("" if c["measured"] else "*"),
                f"{c['samples_s']:.2f}",
                f"{c['host_copy_s'] + c['samples_host_s']:.3f}",
                f"{r['fid']:.2f}",
                "-" if r["frd"] is None else f"{r['frd']:.2f}",
            )
        console.print(table)
        console.print(
            f"worker: {queue['wall_s']:.1f} s wall against {queue['jobs_sum_s']:.1f} s of the jobs' own "
            f"({queue['overlap_gained_s']:+.1f} s overlapped; overlap {queue['options'].get('overlap', 'not offered')}"
            "); * scaled by checkpoint size"
        )
    proj = results.get("projection")
    if proj:
        table = Table(
            title=f"Projection: the {len(proj['jobs'])} thesis jobs, {proj['epochs']} epochs x "
            f"{proj['images_per_epoch']} slices, with evaluation at each job's own n"
        )
        for column in ("path", "training", "checkpoints+grids", "start-up", "evaluation", "total"):
            table.add_column(column, justify="left" if column == "path" else "right")
        labels = {
            "today": "today's path",
            "phase_conv": "+ phase_conv (DCGAN)",
            "background_checkpoints": "+ background checkpoints",
            "overlap": "+ overlapped evaluation",
            "all": "all together",
        }
        for key, label in labels.items():
            t = proj["totals"][key]
            table.add_row(
                label, _h(t["train_s"]), _h(t["bookkeeping_s"]), _h(t["startup_s"]), _h(t["eval_s"]), _h(t["total_s"])
            )
        console.print(table)


# --- the run ---


def main() -> None:
    """Budget on one H100, estimated from docs/performance.md's H200 rates (phases_s in the JSON has the
    measured times): imports, weights and the phantom 30 s, the phase_conv pair 15 s, the 21 jobs about
    6 minutes (a `heartjobs run` child's start-up, about 8-10 s each, dominates; training 2 epochs over 512
    slices, a few seconds for DCGAN; evaluation 3 x 1000 at 2048-d with KID and FRD, a few seconds each),
    checkpoint costs 10 s: about 7-8 minutes. --n trades evaluation time for a shorter scaling."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the CPU's default); explicit options win")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA, at toy sizes (--tiny)")
    parser.add_argument("--out", type=Path, help="the JSON file written (default: see the module's docstring)")
    parser.add_argument("--size", type=int, help="image size (256)")
    parser.add_argument("--images", type=int, help="phantom slices in the training set (512)")
    parser.add_argument("--epochs", type=int, help="epochs per job (2)")
    parser.add_argument("--n", type=int, help="generated images per evaluation repeat (1000)")
    parser.add_argument("--repeats", type=int, help="evaluation repeats (3)")
    parser.add_argument("--dims", type=int, choices=(64, 192, 768, 2048), help="Inception features (2048)")
    parser.add_argument("--pair-epochs", type=int, help="timed epochs of each phase_conv run (3)")
    parser.add_argument("--jobs", help="comma-separated job names of the thesis sweep, or 'all' (all)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    profile = "tiny" if args.tiny or not cuda else "gpu"
    for key, value in PROFILES[profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not cuda and not args.allow_cpu:
        raise SystemExit("gpu-study: no CUDA device here (pass --allow-cpu to try it on the CPU at toy sizes)")
    for key in ("size", "images", "epochs", "n", "repeats", "pair_epochs"):
        if getattr(args, key) < (8 if key == "size" else 1):
            parser.error(f"--{key.replace('_', '-')}: too small ({getattr(args, key)})")
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    if args.out is None:
        slug = card_slug(name)
        toy = profile == "tiny" or not cuda
        dated = RECORDED / f"gpu_study_{time.strftime('%Y-%m-%d')}_{slug}.json"
        args.out = RESULTS / "gpu_study.json" if toy else dated
    matrix = thesis_matrix()
    chosen = dict.fromkeys(n for n in args.jobs.split(",") if n)
    names = [j["name"] for j in matrix] if args.jobs == "all" else list(chosen)
    unknown = [n for n in names if n not in {j["name"] for j in matrix}]
    if unknown or not names:
        parser.error(f"--jobs: not in {SWEEP}: {', '.join(unknown) or 'none given'} (known: all, or "
                     f"{', '.join(j['name'] for j in matrix)})")  # fmt: skip
    started = time.perf_counter()

    try:
        weights = resolve_weights("untrained" if profile == "tiny" else "standard", download=False)
    except HeartjobsError:
        weights = resolve_weights("untrained")  # from heartjobs' usual cache: made once, about 96 MB
    results: dict = {
        "bench": "gpu_study",
        "complete": False,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": {
            "kind": device,
            "name": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "sizes": {k: getattr(args, k) for k in PROFILES["gpu"]} | {"profile": profile, "job_names": names},
        "weights": {"kind": "standard" if weights.standard else "untrained", "sha256": weights.sha256},
        # what this heartjobs' runs already do (the study's jobs ran with it): background writes, overlap
        "heartjobs_has": {
            "background_writes": True,
            "overlapped_evaluation": True,
            "phase_conv": True,
        },
        "phases_s": {},
    }

    phase_done = phase_recorder(results, args.out, started)

    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        tmp = Path(tmp)
        # the real statistics start cold, as a matrix's first job finds them (the weights stay where they are)
        os.environ["HEARTJOBS_CACHE"] = str(tmp / "cache")
        if not cuda:  # toy timings: a CPU worker elsewhere on this machine must not hold the study up
            os.environ[locks.LOCK_DIR_ENV] = str(tmp / "locks")
        start = time.perf_counter()
        prepared = phantom_prepared(tmp, args.images, args.size)
        paths = study_specs(names, tmp / "jobs", args, prepared, weights.path)
        phase_done("setup", start)

        start = time.perf_counter()
        results["phase_conv"] = pair = phase_conv_pair(prepared, tmp / "pair", args.pair_epochs, device)
        _say(f"phase_conv: {pair['plain']['images_per_s']:.1f} -> {pair['phase_conv']['images_per_s']:.1f} img/s")
        phase_done("phase_conv", start)

        start = time.perf_counter()
        queue = run_queue(paths, tmp / "queue")
        jobs = job_figures(tmp / "queue")
        for job in matrix:
            if job["name"] in jobs:
                jobs[job["name"]] |= {"model": job["model"], "config": [job["model"], job["batch_size"],
                                                                         job["latent_dim"]]}  # fmt: skip
        done = [r for r in jobs.values() if r["state"] == "done"]
        queue["jobs_sum_s"] = round(sum(r["job_s"] or 0 for r in jobs.values()), 2)
        queue["overlap_gained_s"] = round(queue["jobs_sum_s"] - queue["wall_s"], 2)
        queue["evaluation_apart"] = any(r["evaluation_apart"] for r in done)
        results["queue"], results["jobs"] = queue, jobs
        phase_done("jobs", start)
        failed = sorted(n for n, r in jobs.items() if r["state"] != "done")
        if failed or len(jobs) != len(names):
            _write_json(args.out, results)
            raise SystemExit(f"gpu-study: jobs not done: {', '.join(failed) or 'some never ran'} (see {args.out})")

        start = time.perf_counter()
        results["checkpoints"] = checkpoint_costs(jobs, paths, prepared, tmp / "keeping", device)
        phase_done("checkpoints", start)

    results["projection"] = project(matrix, results["jobs"], results["checkpoints"], results["phase_conv"])
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    results["complete"] = True
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json(args.out, results)
    print_tables(results)
    _say(f"wrote {args.out} ({results['seconds_total']} s)")


if __name__ == "__main__":
    main()
