"""A crash-safe directory queue of job specs: pending/, running/, done/ and failed/, and what a worker
leaves there (its heartbeat beside the job it runs, how each job ended).

A job is claimed by renaming its file from pending/ into running/ (atomic: exactly one worker wins) and
renamed into done/ or failed/ beside its log; a job left in running/ by a dead worker goes back to pending/,
marked to resume from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from heartjobs.errors import HeartjobsError
from heartjobs.records import Record
from heartjobs.spec.loading import parse_spec
from heartjobs.store.rundir import RunDir, versions
from heartjobs.store.status import WORKER_DEAD_AFTER_S, heartbeat_age, progress_text
from heartjobs.system import liveness

STATES = ("pending", "running", "done", "failed")
FORCED = "forced"  # sidecar: the entry was claimed by a worker with --force
SIDECARS = ("log", FORCED)  # what travels with an entry from folder to folder
OUTSIDE_STOPS_RESUMED = 3  # a job whose run is stopped or killed from outside goes back this many times
# NNNNNN_<name>[.rK].toml; DOTALL: an entry queued by older versions, which wrote names unspelled, may hold
# a newline, and is still an entry
_ENTRY = re.compile(r"(\d{6})_(.+?)(?:\.r(\d+))?\.toml", re.DOTALL)
_LOOKS_RECOVERED = re.compile(r"\.(r\d+)$")
MAX_NAME_BYTES = 200  # a spelled name; with the order, the recovery count and a sidecar's suffix, under NAME_MAX


class Outcome(Record):
    """done/<entry>.json or failed/<entry>.json: how a queued job ended (done, skipped, failed), its run
    folder, its error or why it was skipped, its exit code and how long the worker spent on it; with a
    worker's --overlap, the wall seconds of its training child and of its measurement's child (which ran
    while the next job trained)."""

    state: str | None = None
    run_dir: str | None = None
    error: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    seconds: float | None = None
    training_s: float | None = None
    evaluation_s: float | None = None


class WorkerBeat(Record):
    """<entry>.worker.json beside a running job: the worker running it (liveness.this_process()), its device
    slot, when it started the job, its heartbeat (heartjobs.store.status), and the job's phase: training, or
    evaluating (with --overlap, its measurement while the next job trains)."""

    pid: int | None = None
    host: str | None = None
    pid_started: int | None = None
    slot: str | None = None
    started: str | None = None
    heartbeat: str | float | None = None
    phase: str | None = None

    def process(self) -> dict:
        """The worker's process and heartbeat, as liveness.alive reads them."""
        return {"pid": self.pid, "host": self.host, "pid_started": self.pid_started, "heartbeat": self.heartbeat}


class Forced(Record):
    """<entry>.forced: the entry was claimed by a worker with --force (which process, when)."""

    forced_by: dict = {}
    at: str | None = None


def spell(name: str) -> str:
    """A user's file name (less .toml) as a queue entry spells it, so that the entry pattern reads back exactly
    that name and no recovery count: '%', control and other unprintable characters (a newline, bytes that
    are not UTF-8) percent-encoded, and the dot of a trailing `.r<digits>` too (`job.r7` is not `job`
    recovered seven times). Readable names stay as they are."""
    spelled = "".join(c if c.isprintable() and c != "%" else _percent(c) for c in name)
    return _LOOKS_RECOVERED.sub(r"%2E\1", spelled)


def unspell(spelled: str) -> str:
    """The user's name that `spell` made `spelled` from."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(os.fsencode(spelled)))


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in os.fsencode(char))


@dataclass(frozen=True)
class Entry:
    """A job file in the queue: NNNNNN_<name>[.rK].toml (K: times it was recovered after a crash), the name
    spelled by `spell` from the file the user queued."""

    path: Path

    @property
    def _match(self) -> re.Match:
        return _ENTRY.fullmatch(self.path.name)

    @property
    def order(self) -> int:
        return int(self._match.group(1))

    @property
    def name(self) -> str:
        """The name of the file the user queued, less .toml, exactly."""
        return unspell(self.spelled)

    @property
    def spelled(self) -> str:
        """The name as the entry's file spells it: one printable line, what messages show."""
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
        """Copy a spec into pending/ under the next order number (claimed without overwriting), named after
        its file (spelled); a name too long to spell within a file name is a one-line error."""
        name = spell(Path(spec_path).name.removesuffix(".toml") or Path(spec_path).name)
        if len(os.fsencode(name)) > MAX_NAME_BYTES:
            raise HeartjobsError(
                f"{spec_path}: file name too long for a queue entry ({len(os.fsencode(name))} bytes as the queue "
                f"spells it, at most {MAX_NAME_BYTES}); rename the file"
            )
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
                target = self.root / "pending" / f"{order:06d}_{name}.toml"
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
        target = self.root / "pending" / f"{entry.order:06d}_{entry.spelled}.r{entry.recovered + 1}.toml"
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
                if beat.phase:
                    row["phase"] = beat.phase
                with contextlib.suppress(HeartjobsError):
                    spec = parse_spec(entry.path)
                    runs = versions(spec.output.root / spec.name)
                    if runs:
                        row["run_dir"] = str(runs[-1])
                        run_status = RunDir(runs[-1]).status()
                        row["progress"] = f"{progress_text(run_status)} epochs"
                        if run_status.state == "trained":  # between its training child and its measurement's
                            row["progress"] += ", measurement pending"
            elif state in ("done", "failed"):
                record = (Outcome.read(entry.sidecar("json")) or Outcome()).data()
                shown = ("state", "run_dir", "error", "seconds", "training_s", "evaluation_s")
                row.update({k: record.get(k) for k in shown if record.get(k)})
            rows.append(row)
        out[state] = rows
    return out
