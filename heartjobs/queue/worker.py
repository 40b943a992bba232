"""The worker: jobs of a directory queue (heartjobs.queue.folders) run one at a time, each in a child
`heartjobs run` (heartjobs.system.launching), under a per-device lock (flock, released by the kernel when its
holder dies) that keeps two workers off one device. It learns how a job ended from the result record its
`heartjobs run` writes (heartjobs.runner.lifecycle), and from the exit code and the last line the child
printed where it died without writing one.

With overlap N, a job's measurement runs while the next job trains: the job trains in a child with
--defer-evaluation (its run is left "trained"), then a second child (`heartjobs run --resume`) measures it
while the worker goes on to the next job; at most N measurements are in flight, and a job stays in running/,
its heartbeat beating, until its measurement is recorded. Training stays one job at a time.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.progress import console
from heartjobs.queue.folders import (
    FORCED,
    OUTSIDE_STOPS_RESUMED,
    Entry,
    Forced,
    Outcome,
    Queue,
    WorkerBeat,
)
from heartjobs.spec.loading import load_spec
from heartjobs.store.rundir import RunDir, finished_version, newest_unfinished
from heartjobs.store.status import WORKER_BEAT_S, now_iso
from heartjobs.system import launching, liveness, locks, stopping

MEASURED_POLL_S = 0.5  # how often a worker training one job looks whether a measurement in flight has ended


class _Heartbeat(threading.Thread):
    """Rewrites the worker's heartbeat file beside the running job every few seconds."""

    def __init__(self, path: Path, record: WorkerBeat):
        super().__init__(daemon=True)
        self.path, self.record = path, record
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.record.model_copy(update={"heartbeat": now_iso()}).write(self.path)
            except OSError as exc:  # keep beating: a missed beat is better than a dead heartbeat thread
                console.print(f"worker: heartbeat not written ({exc})")
            self.stopped.wait(WORKER_BEAT_S)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


@dataclass
class _Child:
    """A `heartjobs run` child of the worker: its process, where its result record and log go."""

    process: subprocess.Popen
    results: tempfile.TemporaryDirectory
    log: IO[bytes]
    log_path: Path
    attempt_starts: int
    started: float = field(default_factory=time.monotonic)

    def wait(self) -> tuple[int, launching.RunResult]:
        """Its exit code and result record (an empty one where it died before writing one), once it ends."""
        code = self.process.wait()
        result = launching.RunResult.read(Path(self.results.name) / "result.json") or launching.RunResult()
        self.log.close()
        self.results.cleanup()
        return code, result


@dataclass
class _Measuring:
    """A trained job whose measurement runs in a child while the worker goes on: its entry, the child, the
    heartbeat that keeps the entry in running/, what its training child reported, and its configuration."""

    entry: Entry
    child: _Child
    beat: _Heartbeat
    info: dict
    spec_hash: str
    started: float


class Worker:
    def __init__(
        self, queue: Queue, *, slot: str | None = None, force: bool = False, poll_s: float = 2.0, overlap: int = 0
    ):
        self.queue = queue.ensure()
        self.slot = slot or locks.default_slot()
        self.force, self.poll_s = force, poll_s
        self.overlap = overlap  # measurements in flight while the next job trains (0: measured by the job itself)
        self.stop_signal: int | None = None
        self.process: subprocess.Popen | None = None
        self.measuring: list[_Measuring] = []
        self.counts: dict[str, int] = {}  # by outcome, in serve()

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum
        for process in [self.process, *(m.child.process for m in self.measuring)]:
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the job checkpoints (a measurement keeps its repeats) and stops

    def serve(self, *, watch: bool = False) -> dict[str, int]:
        """Run jobs until the queue is empty (or, with watch, until stopped); returns counts by outcome."""
        self.counts = counts = {"done": 0, "failed": 0, "skipped": 0, "requeued": 0}
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with locks.device_lock(self.slot, lambda: self.stop_signal is not None) as locked:
                while locked and self.stop_signal is None:
                    self._settle_measured()
                    for entry in self.queue.recover_stale():
                        console.print(f"worker: {entry.spelled}: its worker died; back in pending/ to resume")
                    entry = self.queue.claim()
                    if entry is None:
                        if self.measuring:  # nothing to train: wait for a measurement (or a new job)
                            self._wait_for_measurement(self.poll_s)
                            continue
                        if not watch:
                            break
                        time.sleep(self.poll_s)
                        continue
                    outcome = self.run_one(entry)
                    if outcome != "measuring":
                        counts[outcome] += 1
                # stopped or drained: the measurements in flight end (stopped ones keep their repeats)
                while self.measuring:
                    self._wait_for_measurement(None)
                    self._settle_measured()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return counts

    def run_one(self, entry: Entry) -> str:
        """Run one claimed job; the heartbeat stops before the job file moves on. With overlap, a trained job's
        measurement is started and "measuring" returned: it is settled when that ends (_settle_measured)."""
        started = time.monotonic()
        if self.force and not entry.sidecar(FORCED).exists():
            # the entry remembers it was claimed to be rerun: a worker that recovers it after a crash,
            # with or without --force, resumes the forced version instead of skipping to the old one
            Forced(forced_by=liveness.this_process(), at=now_iso()).write(entry.sidecar(FORCED))
        record = WorkerBeat(**liveness.this_process(), slot=self.slot, started=now_iso(), phase="training")
        beat = _Heartbeat(entry.sidecar("worker.json"), record)
        beat.start()
        try:
            outcome, info = self._execute(entry)
            if outcome == "trained":
                info["training_s"] = round(time.monotonic() - started, 2)
                outcome, info = self._measure(entry, beat, info, started)
                if outcome == "measuring":  # the heartbeat goes on, with the measurement
                    return outcome
        except BaseException:
            beat.stop()
            raise
        beat.stop()
        info["seconds"] = round(time.monotonic() - started, 2)
        return self._settle(entry, outcome, info)

    # --- measurements in flight (overlap) ---

    def _measure(self, entry: Entry, beat: _Heartbeat, info: dict, started: float) -> tuple[str, dict]:
        """Start the measurement of a trained job, once fewer than `overlap` are in flight: "measuring"; or,
        when the worker was asked to stop meanwhile, "requeued" (the next --resume measures it)."""
        while len(self.measuring) >= self.overlap and self.stop_signal is None:
            self._wait_for_measurement(None)
            self._settle_measured()
        spec_hash = info.pop("spec_hash")
        if self.stop_signal is not None:
            return "requeued", {**info, "reason": "trained; stopped before its measurement"}
        beat.record = beat.record.model_copy(update={"phase": "evaluating"})
        try:
            child = self._launch(entry, resume=True, defer_evaluation=False)
        except HeartjobsError as exc:  # its log turned into a link meanwhile (a hostile queue): it fails alone
            return "failed", {**info, "error": str(exc), "exit_code": 2}
        self.measuring.append(_Measuring(entry, child, beat, info, spec_hash, started))
        if self.stop_signal is not None:  # the signal came while it started: it gets the same request
            child.process.send_signal(signal.SIGTERM)
        console.print(f"worker: {entry.spelled}: trained; measuring it while the next job trains")
        return "measuring", info

    def _wait_for_measurement(self, timeout: float | None) -> None:
        """Until the oldest measurement in flight ends (or timeout seconds pass)."""
        if self.measuring:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.measuring[0].child.process.wait(timeout)

    def _wait_for_configuration(self, spec_hash: str) -> None:
        """Until no measurement of this configuration is in flight: a second entry of it then finds it done
        (skipped), instead of racing the measurement for the configuration's lock."""
        while any(m.spec_hash == spec_hash for m in self.measuring):
            self._wait_for_measurement(None)
            self._settle_measured()

    def _settle_measured(self) -> None:
        """Settle the measurements that have ended: the entry moves on as one whole job would."""
        for measuring in [m for m in self.measuring if m.child.process.poll() is not None]:
            self.measuring.remove(measuring)
            measuring.beat.stop()
            evaluation_started = measuring.child.started
            outcome, info = self._ended(measuring.entry, measuring.child)
            info = {**measuring.info, **{k: v for k, v in info.items() if v is not None}}
            info["evaluation_s"] = round(time.monotonic() - evaluation_started, 2)
            info["seconds"] = round(time.monotonic() - measuring.started, 2)
            self.counts[self._settle(measuring.entry, outcome, info)] += 1

    def _execute(self, entry: Entry) -> tuple[str, dict]:
        try:
            spec = load_spec(entry.path)
            forced = self.force or entry.sidecar(FORCED).exists()
            done_before = None if forced else finished_version(spec)
            if done_before is None:
                from heartjobs.evaluation.preflight import check_measurable  # imports torch: only when needed

                check_measurable(spec, entry.path)  # before the job starts, not after it trained
        except HeartjobsError as exc:
            return "failed", {"error": str(exc), "exit_code": 2}
        if done_before is not None:
            return "skipped", {"run_dir": str(done_before)}
        if self.stop_signal is not None:
            return "requeued", {}
        # One configuration runs once at a time, however often it was queued and whoever else runs it: the
        # job holds its configuration's lock (locks.config_lock) and exits Busy when another process has it.
        # A measurement of it in flight here is waited for: then the entry finds it done.
        self._wait_for_configuration(spec.spec_hash)
        if not forced and (done_after := finished_version(spec)) is not None:
            return "skipped", {"run_dir": str(done_after)}
        # A version left "trained" (its measurement pending: a dead worker's, or one in flight in another
        # worker) is this entry's to finish, not to train again beside it.
        try:
            resume = bool(entry.recovered) or _measurement_pending(spec)
        except HeartjobsError as exc:  # a stray link among its versions (refused, never followed): it fails alone
            return "failed", {"error": str(exc), "exit_code": 2}
        doing = "resuming" if resume else "running"
        console.print(f"worker: {entry.spelled}: {doing} on {self.slot}")
        try:
            child = self._launch(entry, resume=resume, defer_evaluation=self.overlap > 0)
        except HeartjobsError as exc:  # its log is a link or not a file (a hostile queue): this job fails alone
            return "failed", {"error": str(exc), "exit_code": 2}
        self.process = child.process
        try:
            while self.measuring:  # a measurement that ends while this job trains is recorded then
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(MEASURED_POLL_S)
                    break
                self._settle_measured()
            outcome, info = self._ended(entry, child)
        finally:
            self.process = None
        if outcome == "trained":
            info["spec_hash"] = spec.spec_hash
        return outcome, info

    def _launch(self, entry: Entry, *, resume: bool, defer_evaluation: bool) -> _Child:
        """Start the job's `heartjobs run` child, its output appended to the entry's log."""
        # The result record goes to a folder of this worker's own, outside the queue: a child orphaned by a
        # dead worker may still write it, and must not leave it among the queue's files.
        log_path = entry.sidecar("log")
        log = atomic.open_for_append(log_path)
        results = tempfile.TemporaryDirectory(prefix="heartjobs-result-")
        try:
            process = launching.start_run(
                entry.path,
                resume=resume,
                result_file=Path(results.name) / "result.json",
                defer_evaluation=defer_evaluation,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            log.close()
            results.cleanup()
            raise
        return _Child(process, results, log, log_path, log.tell())

    def _ended(self, entry: Entry, child: _Child) -> tuple[str, dict]:
        """How a job's child ended (waited for), from its result record and exit code."""
        code, result = child.wait()
        info = {"exit_code": code, "run_dir": result.run_dir}
        if code == 0:
            return ("trained" if result.state == "trained" else "done"), info
        if code == locks.Busy.exit_code:  # e.g. a user's --resume took the version first: it is being run
            return "skipped", {**info, "reason": result.error or "another process is running it"}
        if self.stop_signal is not None and (stopping.stopped_by_signal(code) or -code in stopping.STOP_SIGNALS):
            return "requeued", info  # the worker was asked to stop; the job checkpointed
        if (stopping.stopped_by_signal(code) or code < 0) and entry.recovered < OUTSIDE_STOPS_RESUMED:
            # stopped or killed from outside (an admin, a preemption, the OOM killer): resumable, so it
            # goes back to be resumed, a few times at most (a job the OOM killer takes each time fails)
            how = f"stopped by signal {code - 128}" if code > 0 else f"killed by signal {-code}"
            return "requeued", {**info, "reason": f"its run was {how} from outside the worker"}
        return "failed", {**info, "error": _failure(result, code, child.log_path, child.attempt_starts)}

    def _settle(self, entry: Entry, outcome: str, info: dict) -> str:
        if outcome == "requeued":
            self.queue.requeue(entry)
            why = info.get("reason", "stopped")
            console.print(f"worker: {entry.spelled}: {why}; back in pending/ to resume")
            return outcome
        state = "done" if outcome in ("done", "skipped") else "failed"
        try:
            self.queue.finish(entry, state, Outcome(state=outcome, **info))
        except OSError as exc:  # a full or read-only queue folder (OutOfSpace too) must not end the worker
            console.print(
                f"worker: {entry.spelled}: {outcome}, but its record could not be written ({one_line(exc, 200)}); "
                "left in running/, where a worker recovers it"
            )
            return outcome
        if outcome == "skipped" and info.get("reason"):
            console.print(f"worker: {entry.spelled}: skipped: {info['reason']}")
        elif outcome == "skipped":
            console.print(f"worker: {entry.spelled}: already finished in {info['run_dir']}; skipped (--force reruns)")
        elif outcome == "done":
            console.print(f"worker: {entry.spelled}: done ({info['run_dir']})")
        else:
            console.print(f"worker: {entry.spelled}: failed: {info['error']}")
        return outcome


def _measurement_pending(spec) -> bool:
    """Whether this configuration's newest version finished training and waits for its measurement."""
    newest = newest_unfinished(spec.run_root)
    return newest is not None and RunDir(newest).spec_hash() == spec.spec_hash and RunDir(newest).training_finished()


def _failure(result: launching.RunResult, code: int, log: Path, attempt_starts: int) -> str:
    """Why a job failed: its run's own error, or, where it died without writing one (before heartjobs had
    loaded, or killed), how its process ended and the last line it printed in this attempt."""
    if result.error:
        return one_line(result.error)
    error = f"exit code {code}"
    if code < 0:
        error += f" (killed by signal {-code})"
    try:
        with open(log, "rb") as f:
            f.seek(attempt_starts)
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return f"{error}: {one_line(lines[-1])}" if lines else error
