"""The worker: jobs of a directory queue (heartjobs.queue.folders) run one at a time, each in a child
`heartjobs run` (heartjobs.system.launching), under a per-device lock (flock, released by the kernel when its
holder dies) that keeps two workers off one device. It learns how a job ended from the result record its
`heartjobs run` writes (heartjobs.runner.lifecycle), and from the exit code and the last line the child
printed where it died without writing one.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

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
from heartjobs.store.rundir import finished_version
from heartjobs.store.status import WORKER_BEAT_S, now_iso
from heartjobs.system import launching, liveness, locks, stopping


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


class Worker:
    def __init__(self, queue: Queue, *, slot: str | None = None, force: bool = False, poll_s: float = 2.0):
        self.queue = queue.ensure()
        self.slot = slot or locks.default_slot()
        self.force, self.poll_s = force, poll_s
        self.stop_signal: int | None = None
        self.process: subprocess.Popen | None = None

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the job checkpoints and stops

    def serve(self, *, watch: bool = False) -> dict[str, int]:
        """Run jobs until the queue is empty (or, with watch, until stopped); returns counts by outcome."""
        counts = {"done": 0, "failed": 0, "skipped": 0, "requeued": 0}
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with locks.device_lock(self.slot, lambda: self.stop_signal is not None) as locked:
                while locked and self.stop_signal is None:
                    for entry in self.queue.recover_stale():
                        console.print(f"worker: {entry.spelled}: its worker died; back in pending/ to resume")
                    entry = self.queue.claim()
                    if entry is None:
                        if not watch:
                            break
                        time.sleep(self.poll_s)
                        continue
                    counts[self.run_one(entry)] += 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return counts

    def run_one(self, entry: Entry) -> str:
        """Run one claimed job; the heartbeat stops before the job file moves on."""
        started = time.time()
        if self.force and not entry.sidecar(FORCED).exists():
            # the entry remembers it was claimed to be rerun: a worker that recovers it after a crash,
            # with or without --force, resumes the forced version instead of skipping to the old one
            Forced(forced_by=liveness.this_process(), at=now_iso()).write(entry.sidecar(FORCED))
        record = WorkerBeat(**liveness.this_process(), slot=self.slot, started=now_iso())
        beat = _Heartbeat(entry.sidecar("worker.json"), record)
        beat.start()
        try:
            outcome, info = self._execute(entry)
        finally:
            beat.stop()
        info["seconds"] = round(time.time() - started, 2)
        return self._settle(entry, outcome, info)

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
        doing = "resuming" if entry.recovered else "running"
        console.print(f"worker: {entry.spelled}: {doing} on {self.slot}")
        try:
            return self._start(entry)
        except HeartjobsError as exc:  # its log is a link or not a file (a hostile queue): this job fails alone
            return "failed", {"error": str(exc), "exit_code": 2}

    def _start(self, entry: Entry) -> tuple[str, dict]:
        """Run the job's `heartjobs run` child to its end; how it ended, from its result record."""
        # The result record goes to a folder of this worker's own, outside the queue: a child orphaned by a
        # dead worker may still write it, and must not leave it among the queue's files.
        log_path = entry.sidecar("log")
        with (
            tempfile.TemporaryDirectory(prefix="heartjobs-result-") as results,
            atomic.open_for_append(log_path) as log,
        ):
            result_file = Path(results) / "result.json"
            attempt_starts = log.tell()
            self.process = launching.start_run(
                entry.path, resume=bool(entry.recovered), result_file=result_file, stdout=log, stderr=subprocess.STDOUT
            )
            code = self.process.wait()
            self.process = None
            result = launching.RunResult.read(result_file) or launching.RunResult()  # none: it died before writing one
        info = {"exit_code": code, "run_dir": result.run_dir}
        if code == 0:
            return "done", info
        if code == locks.Busy.exit_code:  # e.g. a user's --resume took the version first: it is being run
            return "skipped", {**info, "reason": result.error or "another process is running it"}
        if self.stop_signal is not None and (stopping.stopped_by_signal(code) or -code in stopping.STOP_SIGNALS):
            return "requeued", info  # the worker was asked to stop; the job checkpointed
        if (stopping.stopped_by_signal(code) or code < 0) and entry.recovered < OUTSIDE_STOPS_RESUMED:
            # stopped or killed from outside (an admin, a preemption, the OOM killer): resumable, so it
            # goes back to be resumed, a few times at most (a job the OOM killer takes each time fails)
            how = f"stopped by signal {code - 128}" if code > 0 else f"killed by signal {-code}"
            return "requeued", {**info, "reason": f"its run was {how} from outside the worker"}
        return "failed", {**info, "error": _failure(result, code, log_path, attempt_starts)}

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
