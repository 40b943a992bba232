"""A crash-safe directory queue of job specs, and the worker that runs them one at a time.

A queue is a folder with pending/, running/, done/ and failed/. A job is claimed by renaming its file
from pending/ into running/ (atomic: exactly one worker wins), run in a child process (heartjobs.system.launching),
and renamed into done/ or failed/ beside its log. A worker's heartbeat file sits beside the job it runs; a job
left in running/ by a dead worker goes back to pending/, marked to resume from its last checkpoint.
A per-device lock (flock, released by the kernel when its holder dies) keeps two workers off one device.
The worker learns how a job ended from the result record its `heartjobs run` writes (heartjobs.runner.lifecycle),
and from the exit code and the last line the child printed where it died without writing one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from heartjobs.errors import HeartjobsError, one_line
from heartjobs.progress import console
from heartjobs.records import Record
from heartjobs.spec.schema import load_spec, parse_spec
from heartjobs.store.rundir import RunDir, finished_version, versions
from heartjobs.store.status import WORKER_BEAT_S, WORKER_DEAD_AFTER_S, heartbeat_age, now_iso, progress_text
from heartjobs.system import launching, liveness, locks, stopping

STATES = ("pending", "running", "done", "failed")
FORCED = "forced"  # sidecar: the entry was claimed by a worker with --force
SIDECARS = ("log", FORCED)  # what travels with an entry from folder to folder
OUTSIDE_STOPS_RESUMED = 3  # a job whose run is stopped or killed from outside goes back this many times
_ENTRY = re.compile(r"(\d{6})_(.+?)(?:\.r(\d+))?\.toml")


class Outcome(Record):
    """done/<entry>.json or failed/<entry>.json: how a queued job ended (done, skipped, failed), its run
    folder, its error or why it was skipped, its exit code and how long the worker spent on it."""

    state: str | None = None
    run_dir: str | None = None
    error: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    seconds: float | None = None


class WorkerBeat(Record):
    """<entry>.worker.json beside a running job: the worker running it (liveness.this_process()), its device
    slot, when it started the job, and its heartbeat (heartjobs.store.status)."""

    pid: int | None = None
    host: str | None = None
    pid_started: int | None = None
    slot: str | None = None
    started: str | None = None
    heartbeat: str | float | None = None

    def process(self) -> dict:
        """The worker's process and heartbeat, as liveness.alive reads them."""
        return {"pid": self.pid, "host": self.host, "pid_started": self.pid_started, "heartbeat": self.heartbeat}


class Forced(Record):
    """<entry>.forced: the entry was claimed by a worker with --force (which process, when)."""

    forced_by: dict = {}
    at: str | None = None


@dataclass(frozen=True)
class Entry:
    """A job file in the queue: NNNNNN_<name>[.rK].toml (K: times it was recovered after a crash)."""

    path: Path

    @property
    def _match(self) -> re.Match:
        return _ENTRY.fullmatch(self.path.name)

    @property
    def order(self) -> int:
        return int(self._match.group(1))

    @property
    def name(self) -> str:
        return self._match.group(2)

    @property
    def recovered(self) -> int:
        return int(self._match.group(3) or 0)

    @property
    def stem(self) -> str:
        return self.path.name.removesuffix(".toml")

    def sidecar(self, suffix: str) -> Path:
        return self.path.with_name(f"{self.stem}.{suffix}")


class Queue:
    def __init__(self, root: Path):
        self.root = Path(root)

    def ensure(self) -> Queue:
        for state in STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)
        return self

    def entries(self, state: str) -> list[Entry]:
        folder = self.root / state
        if not folder.is_dir():
            return []
        found = [Entry(p) for p in folder.iterdir() if _ENTRY.fullmatch(p.name)]
        return sorted(found, key=lambda e: (e.order, e.path.name))

    def _next_order(self) -> int:
        orders = [e.order for state in STATES for e in self.entries(state)]
        return max(orders, default=0) + 1

    def add(self, spec_path: Path) -> Path:
        """Copy a spec into pending/ under the next order number (claimed without overwriting)."""
        self.ensure()
        incoming = self.root / ".incoming"
        incoming.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=incoming, suffix=".toml")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(Path(spec_path).read_bytes())
                f.flush()
                os.fsync(f.fileno())
            order = self._next_order()
            while True:
                target = self.root / "pending" / f"{order:06d}_{Path(spec_path).stem}.toml"
                try:
                    os.link(tmp, target)  # fails if the name exists: two enqueuers never collide
                    return target
                except FileExistsError:
                    order += 1
        finally:
            os.unlink(tmp)

    def claim(self) -> Entry | None:
        """Move the oldest pending job into running/; None when nothing is pending."""
        for entry in self.entries("pending"):
            target = self.root / "running" / entry.path.name
            try:
                os.rename(entry.path, target)
            except FileNotFoundError:
                continue  # another worker was faster
            _move_sidecars(entry, self.root / "running", entry.stem, keep=SIDECARS)  # an earlier attempt's log
            return Entry(target)
        return None

    def recover_stale(self, stale_after: float = WORKER_DEAD_AFTER_S) -> list[Entry]:
        """Put jobs whose worker is gone back into pending/, marked to resume."""
        recovered = []
        for entry in self.entries("running"):
            beat = WorkerBeat.read(entry.sidecar("worker.json"))
            if beat and not _worker_gone(beat, stale_after):
                continue
            try:
                claimed_ago = time.time() - entry.path.stat().st_ctime
            except FileNotFoundError:
                continue  # finished meanwhile
            if not beat and claimed_ago < stale_after:
                continue  # just claimed (the rename set ctime); its worker is about to write the heartbeat
            with contextlib.suppress(FileNotFoundError):
                recovered.append(self.requeue(entry))
        return recovered

    def requeue(self, entry: Entry) -> Entry:
        """Back to pending/, counted as recovered so that it resumes from its checkpoint."""
        target = self.root / "pending" / f"{entry.order:06d}_{entry.name}.r{entry.recovered + 1}.toml"
        os.rename(entry.path, target)
        _move_sidecars(entry, self.root / "pending", target.name.removesuffix(".toml"), keep=SIDECARS)
        with contextlib.suppress(FileNotFoundError):
            entry.sidecar("worker.json").unlink()
        return Entry(target)

    def finish(self, entry: Entry, state: str, record: Outcome) -> Path:
        """Move a running job into done/ or failed/ with its log and a record of how it ended."""
        target = self.root / state / entry.path.name
        record.write(self.root / state / f"{entry.stem}.json")
        _move_sidecars(entry, self.root / state, entry.stem, keep=SIDECARS)
        os.rename(entry.path, target)
        with contextlib.suppress(FileNotFoundError):
            entry.sidecar("worker.json").unlink()
        return target


def _worker_gone(beat: WorkerBeat, stale_after: float) -> bool:
    return not liveness.alive(beat.process(), stale_after)


def _move_sidecars(entry: Entry, folder: Path, stem: str, keep: tuple[str, ...]) -> None:
    for suffix in keep:
        source = entry.sidecar(suffix)
        if source.exists():
            target = folder / f"{stem}.{suffix}"
            if target.exists():  # a previous attempt's log: keep both
                target = folder / f"{stem}.{int(time.time())}.{suffix}"
            os.rename(source, target)


# --- the worker ---


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
                        console.print(f"worker: {entry.name}: its worker died; back in pending/ to resume")
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
        console.print(f"worker: {entry.name}: {doing} on {self.slot}")
        return self._start(entry)

    def _start(self, entry: Entry) -> tuple[str, dict]:
        """Run the job's `heartjobs run` child to its end; how it ended, from its result record."""
        # The result record goes to a folder of this worker's own, outside the queue: a child orphaned by a
        # dead worker may still write it, and must not leave it among the queue's files.
        log_path = entry.sidecar("log")
        with tempfile.TemporaryDirectory(prefix="heartjobs-result-") as results, open(log_path, "ab") as log:
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
            console.print(f"worker: {entry.name}: {why}; back in pending/ to resume")
            return outcome
        state = "done" if outcome in ("done", "skipped") else "failed"
        try:
            self.queue.finish(entry, state, Outcome(state=outcome, **info))
        except OSError as exc:  # a full or read-only queue folder (OutOfSpace too) must not end the worker
            console.print(
                f"worker: {entry.name}: {outcome}, but its record could not be written ({one_line(exc, 200)}); "
                "left in running/, where a worker recovers it"
            )
            return outcome
        if outcome == "skipped" and info.get("reason"):
            console.print(f"worker: {entry.name}: skipped: {info['reason']}")
        elif outcome == "skipped":
            console.print(f"worker: {entry.name}: already finished in {info['run_dir']}; skipped (--force reruns)")
        elif outcome == "done":
            console.print(f"worker: {entry.name}: done ({info['run_dir']})")
        else:
            console.print(f"worker: {entry.name}: failed: {info['error']}")
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


def status(queue: Queue) -> dict[str, list[dict]]:
    """What each folder holds; running jobs with their progress and heartbeat age."""
    out: dict[str, list[dict]] = {}
    for state in STATES:
        rows = []
        for entry in queue.entries(state):
            row = {"job": entry.path.name, "name": entry.name}
            if state == "running":
                beat = WorkerBeat.read(entry.sidecar("worker.json")) or WorkerBeat()
                age = heartbeat_age(beat.process())
                row["heartbeat_age_s"] = None if age is None else round(age, 1)
                row["worker"] = beat.pid
                with contextlib.suppress(HeartjobsError):
                    spec = parse_spec(entry.path)
                    runs = versions(spec.output.root / spec.name)
                    if runs:
                        row["run_dir"] = str(runs[-1])
                        row["progress"] = f"{progress_text(RunDir(runs[-1]).status())} epochs"
            elif state in ("done", "failed"):
                record = (Outcome.read(entry.sidecar("json")) or Outcome()).data()
                row.update({k: record.get(k) for k in ("state", "run_dir", "error", "seconds") if record.get(k)})
            rows.append(row)
        out[state] = rows
    return out
