"""A job's lifecycle: one job spec to one complete, versioned, resumable run, measured at the end.

The run folder is chosen (a new version, or the one to resume), the stop signals become a stop request,
the Trainer trains (heartjobs.training), the final generator is measured (heartjobs.evaluation), and
status.json follows each step. The runner (this and runner/training.py) is the only place that calls both
training and evaluation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, JobInterrupted, one_line
from heartjobs.evaluation.preflight import check_measurable, open_against
from heartjobs.evaluation.records import summary_line
from heartjobs.evaluation.runs import evaluate_run
from heartjobs.progress import console
from heartjobs.runner.eventlog import EventLog, check_available
from heartjobs.runner.training import newest_checkpoint, train
from heartjobs.spec.identity import configuration_differences
from heartjobs.spec.loading import load_spec
from heartjobs.spec.schema import ResolvedSpec
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.provenance import environment
from heartjobs.store.rundir import RunDir, claim_version, finished_version, newest_unfinished, version_number
from heartjobs.store.status import Status, StatusFile
from heartjobs.system import launching, liveness, locks, stopping
from heartjobs.system.device import resolve_device

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
    defer_evaluation: bool = False,
) -> Path:
    """Train the job in `spec_path` to the end and measure it; returns its run folder.

    Raises JobInterrupted (after writing a checkpoint) when a stop signal arrives: `stop` is the request
    the signals set (stopping.stop_on_signals_until_exit, for a process that only runs this job); without
    it, the signals are taken while the job runs and handed back afterwards. With result_file, how
    the run ended ({"state": done | interrupted | failed, "run_dir", "error", "exit_code"}) is written
    there, atomically, however this function ends: what a queue worker reads instead of the log. (A
    process killed outright, or one that fails before it gets here, writes none.) device: where to train
    this time instead of the spec's train.device (not part of the job's identity: the run's env.json
    records where it ran, and a resume may run elsewhere). defer_evaluation: train only; a job that is
    measured is left "trained" (status.json, and the result record), its measurement done by the next
    `--resume`, which skips training: how a queue worker measures one job while the next one trains.
    """
    outcome = launching.RunResult(spec=str(spec_path), run_dir=None)
    try:
        with contextlib.nullcontext(stop) if stop is not None else stopping.stop_on_signals() as stop:
            run_dir = _run(Path(spec_path), resume, outcome, stop, device, defer_evaluation)
    except JobInterrupted as exc:
        _write_result(result_file, outcome, "interrupted", str(exc), exc.exit_code)
        raise
    except HeartjobsError as exc:
        _write_result(result_file, outcome, "failed", str(exc), exc.exit_code)
        raise
    except BaseException as exc:
        _write_result(result_file, outcome, "failed", one_line(exc, with_type=True), 1)
        raise
    _write_result(result_file, outcome, "trained" if RunDir(run_dir).status().state == "trained" else "done", None, 0)
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
    spec_path: Path,
    resume: bool,
    outcome: launching.RunResult,
    stop: stopping.StopRequest,
    device_override: str | None,
    defer_evaluation: bool,
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
        return _run_locked(spec, spec_path, run, device, stop, defer_evaluation)


def _stop_before_a_version(stop: stopping.StopRequest, when: str) -> None:
    """A stop request that came before a version was chosen: nothing to checkpoint, nothing claimed."""
    if stop.signal is not None:
        name = signal.Signals(stop.signal).name
        raise JobInterrupted(f"stopped by {name} {when}, before a version was chosen", stop.signal)


def _run_locked(
    spec: ResolvedSpec,
    spec_path: Path,
    run: RunDir,
    device: torch.device,
    stop: stopping.StopRequest,
    defer_evaluation: bool,
) -> Path:
    for path in run.remove_stale_temp_files():  # left by a process killed mid-write
        console.print(f"{spec.name}: removed {path.relative_to(run.path)}, left by a killed process")
    t = spec.train
    prepared = PreparedSet.open(spec.data.prepared)
    trained = run.training_finished()  # read before this process's status replaces it
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
        if trained:
            doing = "its measurement is left to --resume" if defer_evaluation else "measuring it"
            console.print(f"{spec.name}: {run} finished training; {doing}")
        else:
            train(spec, run, prepared, device, status, stop, stop_if_requested)
        stop_if_requested("after training, before evaluation")
        if spec.eval.measure and defer_evaluation:
            status.finish("trained")  # measured by the next --resume (a queue worker's, while the next job trains)
            return run.path
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
            run.refuse_links()
            held.enter_context(locks.run_lock(run.path))
            newest_checkpoint(run, spec)  # one that is not this run's is refused before anything is written
            if run.status().state != "trained":  # measuring a trained run is its next step, not a resume
                env = environment(str(device), spec.data.prepared)
                atomic.write_json(run.resumed_env(run.status().resumed + 1), env)
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
        atomic.write_json(folder / RunDir.ENV, environment(str(device), spec.data.prepared))
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


# --- the measurement at the end ---


def _evaluate(run: RunDir, prepared: PreparedSet, status: StatusFile, stop_if_requested: Callable[[], None]) -> None:
    """The metrics at the end of training, against the set in memory that training read, then against each
    other set of [eval] against (into evals/); if they can't run, the training artifacts stay and the error
    says how to retry."""
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
    spec = run.spec()
    if spec.output.tensorboard:  # the own set's number only: a held-out one is no point of its curves
        with EventLog(run / RunDir.TENSORBOARD, None) as log:
            log.measurement(record, during=False)
    for other in spec.eval.against:
        try:
            held_out = evaluate_run(run.path, poll=poll, against=open_against(other, spec, "eval.against: "))
        except JobInterrupted:
            raise
        except HeartjobsError as exc:
            raise HeartjobsError(
                f"{exc} (training finished and its own set measured; its artifacts are intact in {run}; "
                f"measure later with: heartjobs fid {run} --against {other})"
            ) from None
        console.print(summary_line(held_out))
