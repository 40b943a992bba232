"""`heartjobs run`: one job spec to one complete, versioned, resumable training run.

This module owns the run folder (what is written where, and when) and the job's lifecycle (status,
signals, resume); the training itself is the Trainer's, and metrics are evaluated elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from heartjobs import artifacts, atomic
from heartjobs.child import STOP_SIGNALS
from heartjobs.data.dataset import PreparedSet
from heartjobs.errors import HeartjobsError
from heartjobs.grids import save_grid
from heartjobs.plots import plot_losses
from heartjobs.progress import TrainingProgress, console
from heartjobs.spec import ResolvedSpec, load_spec
from heartjobs.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, save_generator
from heartjobs.training.loop import SAMPLE_GRID, Interrupted, Trainer, resolve_device

LOSSES = "losses.jsonl"
RESUME_WAIT_S = float(os.environ.get("HEARTJOBS_RESUME_WAIT_S", "60"))


class JobInterrupted(HeartjobsError):
    """The job was stopped by a signal after writing a checkpoint; exit 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict]:
    """Turn the stop signals (SIGTERM, SIGINT, and SIGUSR2, which Slurm sends before a time limit) into a
    stop request that the loop honours between batches."""
    requested: dict = {"signal": None}

    def handler(signum, frame):
        requested["signal"] = signum

    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _resolved_record(spec: ResolvedSpec) -> dict:
    return {"spec_hash": spec.spec_hash, "spec": spec.model_dump(mode="json")}


def _open_run(spec: ResolvedSpec, spec_path: Path, resume: bool, device: torch.device) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to continue from or None): a new version, or the one to resume."""
    job_root = spec.run_root
    if resume:
        run_dir = artifacts.newest_unfinished(job_root)
        if run_dir is not None:
            status = _wait_until_stopped(run_dir)
            if status.get("state") == "running" and artifacts.process_alive(status):
                raise HeartjobsError(f"{run_dir}: still running (pid {status['pid']}); not resuming it twice")
            recorded = artifacts.spec_hash_of(run_dir)
            if recorded != spec.spec_hash:
                raise HeartjobsError(
                    f"{spec_path}: spec_hash: {run_dir} was made with spec {recorded}, this spec resolves to "
                    f"{spec.spec_hash}; refusing to resume (run without --resume to start a new version)"
                )
            checkpoints = list_checkpoints(run_dir / "checkpoints")
            env_name = f"env.resume{artifacts.read_status(run_dir).get('resumed', 0) + 1}.json"
            atomic.write_json(run_dir / env_name, artifacts.environment(str(device)))
            return run_dir, checkpoints[-1] if checkpoints else None
        console.print(f"{spec.name}: nothing to resume; starting a new version")
    run_dir = artifacts.claim_version(job_root)
    atomic.write_bytes(run_dir / "job.toml", Path(spec_path).read_bytes())
    atomic.write_json(run_dir / "resolved.json", _resolved_record(spec))
    atomic.write_json(run_dir / "env.json", artifacts.environment(str(device)))
    return run_dir, None


def _wait_until_stopped(run_dir: Path, patience_s: float = RESUME_WAIT_S) -> dict:
    """A job whose worker died gets SIGTERM and writes its checkpoint; give it time to finish that."""
    deadline = time.monotonic() + patience_s
    status = artifacts.read_status(run_dir)
    while status.get("state") == "running" and artifacts.process_alive(status) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = artifacts.read_status(run_dir)
    return status


def _write_losses(run_dir: Path, history: list[dict]) -> None:
    atomic.write_bytes(run_dir / LOSSES, "".join(json.dumps(h) + "\n" for h in history).encode())


def run_job(spec_path: Path, *, resume: bool = False) -> Path:
    """Train the job in `spec_path` to the end; returns its run folder.

    Raises JobInterrupted (after writing a checkpoint) when a stop signal arrives.
    """
    spec = load_spec(spec_path)
    t = spec.train
    device = resolve_device(t.device)
    run_dir, checkpoint = _open_run(spec, Path(spec_path), resume, device)
    prepared = PreparedSet.open(spec.data.prepared)
    status = artifacts.StatusFile(run_dir, t.epochs)
    # Signals are turned into a stop request for the whole job: training stops between batches,
    # evaluation between repeats; either way the run is left resumable.
    with _stop_on_signals() as stop:

        def stop_if_requested(what: str) -> None:
            if stop["signal"] is not None:
                name = signal.Signals(stop["signal"]).name
                status.finish("interrupted", error=f"stopped by {name}")
                raise JobInterrupted(
                    f"{run_dir}: stopped by {name} {what}; continue with: heartjobs run {spec_path} --resume",
                    stop["signal"],
                )

        try:
            trainer = Trainer(spec, prepared.tensor(), device)
            if checkpoint is not None:
                trainer.load_state_dict(load_checkpoint(checkpoint, spec.spec_hash))
                console.print(f"{spec.name}: resuming {run_dir} from {checkpoint.name}", markup=False)
            _write_losses(run_dir, trainer.history)  # drops epochs logged after the checkpoint
            if not (run_dir / "real.png").exists():
                picks = torch.randperm(prepared.count, generator=torch.Generator().manual_seed(t.seed + 4))
                save_grid(prepared.images[picks[:SAMPLE_GRID].numpy()], run_dir / "real.png")
            try:
                _train(spec, trainer, run_dir, status, stop)
            except Interrupted:
                path = save_checkpoint(
                    run_dir / "checkpoints", trainer.state_dict(), spec.spec_hash, t.keep_checkpoints
                )
                stop_if_requested(f"after {trainer.epoch} epochs; checkpoint {path.name} written")
            save_generator(
                run_dir / "generator.pt", trainer.G, spec.model_dump(mode="json"), trainer.epoch, spec.spec_hash
            )
            del trainer  # free the training state (GPU memory) before evaluating
            stop_if_requested("after training, before evaluation")
            if spec.eval.fid:
                _evaluate(run_dir, status, lambda: stop_if_requested("during evaluation"))
        except JobInterrupted:
            raise
        except BaseException as exc:
            status.finish("failed", error=" ".join(f"{type(exc).__name__}: {exc}".split())[:500])
            raise
    status.finish("done")
    return run_dir


def _evaluate(run_dir: Path, status: artifacts.StatusFile, stop_if_requested) -> None:
    """FID at the end of training; if it can't run, the training artifacts stay and say how to retry."""
    from heartjobs.evaluation.fid import evaluate

    status.beat(force=True, phase="evaluating")

    def between_repeats() -> None:
        status.beat()
        stop_if_requested()

    try:
        report = evaluate(run_dir, heartbeat=between_repeats)
    except HeartjobsError as exc:
        if isinstance(exc, JobInterrupted):
            raise
        raise HeartjobsError(
            f"{exc} (training finished; its artifacts are intact in {run_dir}; "
            f"evaluate later with: heartjobs fid {run_dir})"
        ) from None
    console.print(fid_line(report), markup=False)


def fid_line(report: dict) -> str:
    text = (
        f"FID {report['fid_mean']:.3f} +- {report['fid_std']:.3f} (n={report['n_generated']} x {len(report['repeats'])}"
    )
    text += f", real n={report['n_real']}, dims {report['dims']})"
    if "kid_mean" in report:
        text += f"  KID {report['kid_mean']:.5f} +- {report['kid_std']:.5f}"
    if not report["standard_weights"]:
        text += f"  [{report['weights']['kind']} weights: not comparable to published FID]"
    return text


def _train(spec: ResolvedSpec, trainer: Trainer, run_dir: Path, status: artifacts.StatusFile, stop: dict) -> None:
    """Epochs until the spec's count; raises Interrupted (state consistent, not yet saved) on a stop."""
    t = spec.train
    checkpoints = run_dir / "checkpoints"
    title = f"{spec.name} {run_dir.name}"
    with TrainingProgress(title, t.epochs, len(trainer.bounds), trainer.epoch) as progress:

        def on_batch(done: int, total: int) -> None:
            progress.batch(done, total)
            status.beat()

        while trainer.epoch < t.epochs:
            stats = trainer.train_epoch(lambda: stop["signal"] is not None, on_batch).as_dict()
            with open(run_dir / LOSSES, "a") as f:  # one short line per epoch, appended
                f.write(json.dumps(stats) + "\n")
            progress.epoch(stats)
            status.beat(epochs_done=trainer.epoch)
            last = trainer.epoch == t.epochs
            if trainer.epoch % t.sample_every == 0 or last:
                save_grid(trainer.samples().numpy(), run_dir / "samples" / f"epoch_{trainer.epoch:04d}.png")
                plot_losses(trainer.history, run_dir / "losses.png", title)
            if trainer.epoch % t.checkpoint_every == 0 or last:
                save_checkpoint(checkpoints, trainer.state_dict(), spec.spec_hash, t.keep_checkpoints)
    if trainer.history and not (run_dir / "losses.png").exists():
        plot_losses(trainer.history, run_dir / "losses.png", title)
