"""A job's lifecycle: one job spec to one complete, versioned, resumable run, measured at the end.

The run folder is chosen (a new version, or the one to resume), the stop signals become a stop request,
the Trainer trains (heartjobs.training), the final generator is measured (heartjobs.evaluation), and
status.json follows each step. This is the only module that calls both training and evaluation.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, JobInterrupted, one_line
from heartjobs.evaluation.driver import measure
from heartjobs.evaluation.preflight import check_measurable
from heartjobs.evaluation.records import evaluation_record, settings_hash, summary_line, write_record
from heartjobs.evaluation.repeatlog import RepeatLog
from heartjobs.grids import save_grid
from heartjobs.hashing import sha256_json
from heartjobs.plots import plot_losses, plot_metric_curve
from heartjobs.progress import TrainingProgress, console
from heartjobs.records import Measurement
from heartjobs.runner.eventlog import EventLog, check_available
from heartjobs.spec.schema import EvalSection, ResolvedSpec, configuration_differences, load_spec
from heartjobs.store.checkpoint import (
    checkpoint_epoch,
    list_checkpoints,
    load_checkpoint,
    load_snapshot,
    save_checkpoint,
    save_generator,
)
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.provenance import environment
from heartjobs.store.rundir import RunDir, claim_version, finished_version, newest_unfinished, version_number
from heartjobs.store.status import Status, StatusFile, mark_done
from heartjobs.system import launching, liveness, locks, stopping
from heartjobs.system.device import resolve_device
from heartjobs.training.loop import SAMPLE_GRID, Interrupted, Trainer

RESUME_WAIT_S = float(os.environ.get("HEARTJOBS_RESUME_WAIT_S", "60"))
CONFIG_LOCK_WAIT_S = 10.0  # a holder that said it stopped is exiting: the kernel frees its lock then


# --- the run ---


def run_job(
    spec_path: Path,
    *,
    resume: bool = False,
    result_file: Path | None = None,
    stop: stopping.StopRequest | None = None,
    device: str | None = None,
) -> Path:
    """Train the job in `spec_path` to the end and measure it; returns its run folder.

    Raises JobInterrupted (after writing a checkpoint) when a stop signal arrives: `stop` is the request
    the signals set (stopping.stop_on_signals_until_exit, for a process that only runs this job); without
    it, the signals are taken while the job runs and handed back afterwards. With result_file, how
    the run ended ({"state": done | interrupted | failed, "run_dir", "error", "exit_code"}) is written
    there, atomically, however this function ends: what a queue worker reads instead of the log. (A
    process killed outright, or one that fails before it gets here, writes none.) device: where to train
    this time instead of the spec's train.device (not part of the job's identity: the run's env.json
    records where it ran, and a resume may run elsewhere).
    """
    outcome = launching.RunResult(spec=str(spec_path), run_dir=None)
    try:
        with contextlib.nullcontext(stop) if stop is not None else stopping.stop_on_signals() as stop:
            run_dir = _run(Path(spec_path), resume, outcome, stop, device)
    except JobInterrupted as exc:
        _write_result(result_file, outcome, "interrupted", str(exc), exc.exit_code)
        raise
    except HeartjobsError as exc:
        _write_result(result_file, outcome, "failed", str(exc), exc.exit_code)
        raise
    except BaseException as exc:
        _write_result(result_file, outcome, "failed", one_line(exc, with_type=True), 1)
        raise
    _write_result(result_file, outcome, "done", None, 0)
    return run_dir


def _write_result(
    path: Path | None, outcome: launching.RunResult, state: str, error: str | None, exit_code: int
) -> None:
    """The result record; failing to write it is a warning that never hides how the run ended."""
    if path is None:
        return
    try:
        outcome.model_copy(update={"state": state, "error": error, "exit_code": exit_code}).write(path)
    except OSError as exc:
        console.print(f"warning: --result {path}: not written ({one_line(exc, 200)})")


def _run(
    spec_path: Path, resume: bool, outcome: launching.RunResult, stop: stopping.StopRequest, device_override: str | None
) -> Path:
    spec = load_spec(spec_path)
    check_measurable(spec, spec_path)  # fail now, not after hours of training
    if spec.output.tensorboard:
        check_available(spec_path)
    _stop_before_a_version(stop, "during setup")
    device = resolve_device(device_override or spec.train.device, "--device" if device_override else "train.device")
    # the configuration's lock and the run's, held from choosing the version to the end
    with contextlib.ExitStack() as held:
        stopping = 0.0
        if resume and (found := newest_unfinished(spec.run_root)) is not None:
            # a process stopping (a dead worker's job) checkpoints first; once it says it stopped, its
            # locks are free the moment it exits
            stopping = 0.0 if _still_running(_wait_until_stopped(RunDir(found), stop)) else CONFIG_LOCK_WAIT_S
        held.enter_context(locks.config_lock(spec.run_root, spec.spec_hash, wait_s=stopping))
        unfinished = newest_unfinished(spec.run_root)
        if resume and (done := finished_version(spec, after=version_number(unfinished) if unfinished else 0)):
            # a restart loop that resumes a finished job must not retrain it forever, nor an older version
            # of a configuration that has since finished
            console.print(f"{spec.name}: already finished in {done}; nothing to resume")
            outcome.run_dir = str(done)
            return done
        run = _open_run(spec, spec_path, resume, device, held, stop)
        outcome.run_dir = str(run.path)
        return _run_locked(spec, spec_path, run, device, stop)


def _stop_before_a_version(stop: stopping.StopRequest, when: str) -> None:
    """A stop request that came before a version was chosen: nothing to checkpoint, nothing claimed."""
    if stop.signal is not None:
        name = signal.Signals(stop.signal).name
        raise JobInterrupted(f"stopped by {name} {when}, before a version was chosen", stop.signal)


def _run_locked(
    spec: ResolvedSpec, spec_path: Path, run: RunDir, device: torch.device, stop: stopping.StopRequest
) -> Path:
    for path in run.remove_stale_temp_files():  # left by a process killed mid-write
        console.print(f"{spec.name}: removed {path.relative_to(run.path)}, left by a killed process")
    t = spec.train
    prepared = PreparedSet.open(spec.data.prepared)
    status = run.status_file(t.epochs, liveness.this_process())
    # The stop signals are a stop request for the whole job: training stops between batches, evaluation
    # between repeats; either way the run is left resumable. Once "done" is written, there is nothing to stop.

    def stop_if_requested(what: str) -> None:
        if stop.signal is not None:
            name = signal.Signals(stop.signal).name
            status.finish("interrupted", error=f"stopped by {name}")
            raise JobInterrupted(
                f"{run}: stopped by {name} {what}; continue with: heartjobs run {spec_path} --resume",
                stop.signal,
            )

    try:
        stop_if_requested("before training")
        _train(spec, run, prepared, device, status, stop, stop_if_requested)
        stop_if_requested("after training, before evaluation")
        if spec.eval.measure:
            _evaluate(run, prepared, status, lambda: stop_if_requested("during evaluation"))
    except JobInterrupted:
        raise
    except atomic.OutOfSpace as exc:  # the last checkpoint is intact: resumable once there is room
        with contextlib.suppress(OSError):
            status.finish("failed", error=str(exc))
        raise HeartjobsError(f"{exc}; free space, then continue with: heartjobs run {spec_path} --resume") from None
    except BaseException as exc:
        with contextlib.suppress(OSError):  # a status that can't be written must not hide the error
            status.finish("failed", error=one_line(exc, with_type=True))
        raise
    for left in run.path.glob(RunDir.EVAL_PROGRESS.format(key="*")):  # a measurement during training stopped part-way
        left.unlink(missing_ok=True)
    status.finish("done")
    return run.path


# --- choosing the run folder ---


def _open_run(
    spec: ResolvedSpec,
    spec_path: Path,
    resume: bool,
    device: torch.device,
    held: contextlib.ExitStack,
    stop: stopping.StopRequest,
) -> RunDir:
    """The run folder, locked for this process (in `held`): with resume, the newest unfinished version of
    this job (checked); otherwise, or when there is none, a new version, which appears with its identity
    files (job.toml, resolved.json, env.json, status.json) in one rename."""
    if resume:
        run = _resumable_version(spec, spec_path, stop)
        if run is not None:
            held.enter_context(locks.run_lock(run.path))
            atomic.write_json(run.resumed_env(run.status().resumed + 1), environment(str(device)))
            return run
        console.print(f"{spec.name}: nothing to resume; starting a new version")
    run = _new_version(spec, spec_path, device)
    held.enter_context(locks.run_lock(run.path))
    return run


def _resumable_version(spec: ResolvedSpec, spec_path: Path, stop: stopping.StopRequest) -> RunDir | None:
    """The newest unfinished version, once its process (if any) has stopped; refused when it is still
    running or was made under another configuration (the refusal names the values that differ)."""
    found = newest_unfinished(spec.run_root)
    if found is None:
        return None
    run = RunDir(found)
    status = _wait_until_stopped(run, stop)
    if _still_running(status):
        raise locks.Busy(f"{run}: still running (pid {status.pid}); not resuming it twice")
    recorded = run.spec_hash()
    if recorded != spec.spec_hash:
        recorded_spec = run.spec_dict()
        differing = "; ".join(configuration_differences(recorded_spec, spec)) if recorded_spec else "no recorded spec"
        raise HeartjobsError(
            f"{spec_path}: spec_hash: {run} was made with spec {recorded}, this spec resolves to "
            f"{spec.spec_hash} ({differing}); refusing to resume (run without --resume to start a new version)"
        )
    return run


def _new_version(spec: ResolvedSpec, spec_path: Path, device: torch.device) -> RunDir:
    def identity(folder: Path) -> None:
        atomic.write_bytes(folder / RunDir.JOB_TOML, Path(spec_path).read_bytes())
        resolved = {"spec_hash": spec.spec_hash, "spec": spec.model_dump(mode="json")}
        atomic.write_json(folder / RunDir.RESOLVED, resolved)
        atomic.write_json(folder / RunDir.ENV, environment(str(device)))
        RunDir(folder).status_file(spec.train.epochs, liveness.this_process())  # "running", by this process

    return RunDir(claim_version(spec.run_root, identity))


def _still_running(status: Status) -> bool:
    """Whether a version's status says running and its process is alive."""
    return status.state == "running" and liveness.process_alive(status.process())


def _wait_until_stopped(run: RunDir, stop: stopping.StopRequest, patience_s: float = RESUME_WAIT_S) -> Status:
    """A job whose worker died gets SIGTERM and writes its checkpoint; give it time to finish that."""
    deadline = time.monotonic() + patience_s
    status = run.status()
    while _still_running(status) and time.monotonic() < deadline:
        _stop_before_a_version(stop, "while waiting for the previous process")
        time.sleep(0.5)
        status = run.status()
    return status


# --- training ---


def _train(
    spec: ResolvedSpec,
    run: RunDir,
    prepared: PreparedSet,
    device: torch.device,
    status: StatusFile,
    stop: stopping.StopRequest,
    stop_if_requested: Callable[[str], None],
) -> None:
    """Train from the newest checkpoint (or the start) to the spec's epochs, then save the generator.
    On a stop request: a checkpoint at the exact batch, then JobInterrupted. With [output] tensorboard, the
    run's event files are written on the way."""
    trainer = Trainer(spec, prepared.tensor(), device)
    checkpoints = list_checkpoints(run.checkpoints)
    if checkpoints:
        trainer.load_state_dict(load_checkpoint(checkpoints[-1], spec.spec_hash))
        console.print(f"{spec.name}: resuming {run} from {checkpoints[-1].name}")
    _write_losses(run, trainer.history)  # drops epochs logged after the checkpoint
    t = spec.train
    events = EventLog(run / RunDir.TENSORBOARD, trainer.epoch) if spec.output.tensorboard else contextlib.nullcontext()
    with events as log:
        _measure_missed(spec, run, prepared, device, status, log)  # a stop during a measurement left it undone
        if not (run / RunDir.REAL_GRID).exists():
            picks = torch.randperm(prepared.count, generator=torch.Generator().manual_seed(t.seed + 4))
            save_grid(prepared.images[picks[:SAMPLE_GRID].numpy()], run / RunDir.REAL_GRID)
        try:
            _epochs(
                spec,
                trainer,
                run,
                status,
                stop,
                lambda path: _measure_during(spec, run, path, prepared, device, status, log),
                log,
            )
        except Interrupted:
            path = save_checkpoint(run.checkpoints, trainer.state_dict(), spec.spec_hash, t.keep_checkpoints)
            stop_if_requested(f"after {trainer.epoch} epochs; checkpoint {path.name} written")
    save_generator(run.generator, trainer.G, spec.model_dump(mode="json"), trainer.epoch, spec.spec_hash)


def _write_losses(run: RunDir, history: list[dict]) -> None:
    atomic.write_bytes(run / RunDir.LOSSES, "".join(json.dumps(h) + "\n" for h in history).encode())


def _epochs(
    spec: ResolvedSpec,
    trainer: Trainer,
    run: RunDir,
    status: StatusFile,
    stop: stopping.StopRequest,
    measure_checkpoint: Callable[[Path], None],
    log: EventLog | None,
) -> None:
    """Epochs until the spec's count; raises Interrupted (state consistent, not yet saved) on a stop. Every
    [eval] every epochs (and the last) the checkpoint is written and measured."""
    t = spec.train
    title = f"{spec.name} {run.path.name}"
    with TrainingProgress(title, t.epochs, len(trainer.bounds), trainer.epoch) as progress:

        def on_batch(done: int, total: int) -> None:
            progress.batch(done, total)
            status.beat()

        while trainer.epoch < t.epochs:
            stats = trainer.train_epoch(lambda: stop.signal is not None, on_batch).as_dict()
            atomic.append_lines(run / RunDir.LOSSES, [json.dumps(stats)])  # one short line per epoch
            progress.epoch(stats)
            if log is not None:
                log.epoch(stats)
            status.beat(epochs_done=trainer.epoch)
            last = trainer.epoch == t.epochs
            if trainer.epoch % t.sample_every == 0 or last:
                save_grid(trainer.samples().numpy(), run.sample_grid(trainer.epoch))
                if log is not None:
                    log.samples(run.sample_grid(trainer.epoch), trainer.epoch)
                plot_losses(trainer.history, run / RunDir.LOSSES_PLOT, title)
            measured = _measured_epoch(spec, trainer.epoch)
            if trainer.epoch % t.checkpoint_every == 0 or last or measured:
                path = save_checkpoint(run.checkpoints, trainer.state_dict(), spec.spec_hash, t.keep_checkpoints)
                if measured:
                    measure_checkpoint(path)
    if trainer.history and not (run / RunDir.LOSSES_PLOT).exists():
        plot_losses(trainer.history, run / RunDir.LOSSES_PLOT, title)


# --- evaluation ---


def _measured_epoch(spec: ResolvedSpec, epoch: int) -> bool:
    """Whether the checkpoint of `epoch` is measured during training ([eval] every, and the last epoch)."""
    every = spec.eval.every
    return every is not None and (epoch % every == 0 or epoch == spec.train.epochs)


def _measure_during(
    spec: ResolvedSpec,
    run: RunDir,
    checkpoint: Path,
    prepared: PreparedSet,
    device: torch.device,
    status: StatusFile,
    log: EventLog | None,
) -> None:
    """Measure a checkpoint with [eval.during]'s settings while training runs, without touching training's
    random state (the run stays bit-identical to one that is not measured); keep it as best.pt when it is
    the best so far ([eval] keep_best), and redraw the run's metric curve."""
    status.beat(force=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        record = evaluate_run(
            run.path, spec.eval.during_settings(), checkpoint=checkpoint, poll=status.beat, prepared=prepared
        )
    console.print(f"{spec.name}: epoch {record.epoch}, during training: {summary_line(record)}")
    if log is not None:
        log.measurement(record, during=True)
    best, choice = run.best_measured(record.settings_hash)  # of this setting's own curve
    if spec.eval.keep_best and best is not None and best.epoch == record.epoch:
        atomic.copy_file(checkpoint, run / RunDir.BEST)
    elif spec.eval.keep_best and best is None:
        console.print(f"{spec.name}: no best checkpoint kept: best is {choice.describe()}")
    curve = run.metric_curve(record.settings_hash)
    if curve:
        plot_metric_curve(curve, run / RunDir.METRICS_PLOT, f"{spec.name} {run.path.name}")


def measure_checkpoints(run_dir: Path, overrides: dict, device: str | None = None) -> list[Measurement]:
    """`heartjobs fid RUN --all-checkpoints`: every kept end-of-epoch checkpoint of a run measured as during
    training ([eval.during]'s settings, `overrides` on top), its metric curve drawn and its best checkpoint
    kept as best.pt ([eval] keep_best); returns the records, oldest epoch first."""
    run = RunDir(run_dir)
    spec = run.spec()
    checkpoints = [p for p in list_checkpoints(run.checkpoints) if "_batch_" not in p.name]
    if not checkpoints:
        raise HeartjobsError(f"{run.checkpoints}: no checkpoints kept (see [train] keep_checkpoints)")
    settings = spec.eval.during_settings().model_copy(update=overrides)
    prepared = PreparedSet.open(spec.data.prepared)
    records = []
    for path in checkpoints:
        record = evaluate_run(run.path, settings, checkpoint=path, device=device, prepared=prepared)
        console.print(f"{run.path} ({record.snapshot['file']}): {summary_line(record)}")
        records.append(record)
    # best.pt: the best of this setting's whole curve (also epochs measured during training whose
    # checkpoints are gone); replaced only when that best is one of the checkpoints measured now
    best, _ = run.best_measured(records[-1].settings_hash)
    if spec.eval.keep_best and best is not None and best.snapshot in [r.snapshot for r in records]:
        atomic.copy_file(run / best.snapshot["file"], run / RunDir.BEST)
    curve = run.metric_curve(records[-1].settings_hash)
    if curve:
        plot_metric_curve(curve, run / RunDir.METRICS_PLOT, f"{spec.name} {run.path.name}")
    return records


def _measure_missed(
    spec: ResolvedSpec,
    run: RunDir,
    prepared: PreparedSet,
    device: torch.device,
    status: StatusFile,
    log: EventLog | None,
) -> None:
    """On resume: measure the kept checkpoints of measured epochs that have no measurement yet."""
    if spec.eval.every is None:
        return
    tag = settings_hash(spec.eval.during_settings())
    done = {r.epoch for r in run.metric_records() if r.settings_hash == tag}
    for path in list_checkpoints(run.checkpoints):
        epoch = checkpoint_epoch(path)
        if "_batch_" not in path.name and _measured_epoch(spec, epoch) and epoch not in done:
            _measure_during(spec, run, path, prepared, device, status, log)


def _evaluate(run: RunDir, prepared: PreparedSet, status: StatusFile, stop_if_requested: Callable[[], None]) -> None:
    """The metrics at the end of training, against the set in memory that training read; if they can't
    run, the training artifacts stay and the error says how to retry."""
    status.beat(force=True, phase="evaluating")

    def poll() -> None:  # between batches and repeats: a stop leaves the finished repeats kept
        status.beat()
        stop_if_requested()

    try:
        record = evaluate_run(run.path, poll=poll, prepared=prepared)
    except JobInterrupted:
        raise
    except HeartjobsError as exc:
        raise HeartjobsError(
            f"{exc} (training finished; its artifacts are intact in {run}; evaluate later with: heartjobs fid {run})"
        ) from None
    console.print(summary_line(record))
    if run.spec().output.tensorboard:
        with EventLog(run / RunDir.TENSORBOARD, None) as log:
            log.measurement(record, during=False)


def evaluate_run(
    run_dir: Path,
    settings: EvalSection | None = None,
    *,
    checkpoint: Path | None = None,
    device: str | None = None,
    poll: Callable[[], None] | None = None,
    save_images: Path | None = None,
    prepared: PreparedSet | None = None,
) -> Measurement:
    """Measure a run's final generator (or one of its checkpoints) and record it in the run folder (see
    heartjobs.evaluation.records); returns the record. The measured images go to save_images as PNG, or,
    when the settings say save_images and this is the run's own measurement, to its eval_images/ (replaced
    once the measurement succeeded: they are copies). A run whose
    training had finished and only its evaluation had failed is marked done once its own evaluation
    succeeds. `prepared`: the run's set already read (the training's own copy), instead of reading it again."""
    run = RunDir(run_dir)
    spec = run.spec()
    settings = settings or spec.eval
    own = checkpoint is None and settings == spec.eval
    # [eval] save_images: the run's own measurement's images, staged and swapped in once it succeeded
    staged = None
    if save_images is None and settings.save_images and own:
        staged = save_images = run / f"{RunDir.EVAL_IMAGES}.partial"
        shutil.rmtree(staged, ignore_errors=True)
    torch_device = resolve_device(device or spec.train.device, "--device" if device else "train.device")
    prepared = prepared or PreparedSet.open(spec.data.prepared)
    if prepared.content_hash != spec.data.content_hash:
        raise HeartjobsError(
            f"{spec.data.prepared}: content_hash: the prepared set changed since {run} was trained on it"
        )
    snapshot = load_snapshot(run, spec, checkpoint, torch_device)
    # what the values depend on: a stopped measurement of the same goes on from its last finished repeat
    gpu = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else None
    key = sha256_json([settings_hash(settings), snapshot.file, snapshot.epoch, str(torch_device), gpu])[:12]
    progress = RepeatLog(run / RunDir.EVAL_PROGRESS.format(key=key))
    result = measure(
        snapshot.generator,
        spec.train.latent_dim,
        prepared,
        settings,
        torch_device,
        poll=poll,
        save_images=save_images,
        progress=progress,
    )
    if staged is not None:
        shutil.rmtree(run / RunDir.EVAL_IMAGES, ignore_errors=True)
        staged.rename(run / RunDir.EVAL_IMAGES)
        result["saved_images"] = str((run / RunDir.EVAL_IMAGES).resolve())
    record = evaluation_record(run, spec, snapshot, result)
    write_record(run, record, settings, own)
    progress.remove()
    status = run.status()
    if own and status.state == "failed" and status.phase == "evaluating":
        mark_done(run / RunDir.STATUS)
    return record
