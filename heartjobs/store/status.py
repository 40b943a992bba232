"""status.json of a run, and the one heartbeat encoding that every liveness record uses.

A heartbeat is an ISO 8601 UTC time string ("2026-11-26T20:01:02+00:00"), in a run's status.json and in
a queue worker's heartbeat file alike; `heartbeat_age` reads it back, and anything unreadable counts as
no heartbeat at all.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from heartjobs.records import Record

# Liveness by heartbeat, for a process on another host (on this one its pid and start time decide). Each
# kind of heartbeat is written at most every *_BEAT_S and counts as dead after *_DEAD_AFTER_S without one:
# a queue worker's heartbeat thread beats steadily; a run beats from its training and evaluation loops,
# which can go minutes between beats (a long evaluation step), so it is given longer.
WORKER_BEAT_S = 5.0
WORKER_DEAD_AFTER_S = 60.0
RUN_BEAT_S = 10.0
RUN_DEAD_AFTER_S = 300.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def heartbeat_age(record: dict | Status) -> float | None:
    """Seconds since the record's heartbeat; None when it has none or it is not a time."""
    return seconds_since(record.heartbeat if isinstance(record, Status) else record.get("heartbeat"))


def seconds_since(stamp: object) -> float | None:
    """Seconds since an ISO time (now_iso's; naive ones read as UTC); None when it is not a time. Seconds
    since the epoch (what queue workers before this encoding wrote) are read too."""
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        return time.time() - stamp
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return time.time() - moment.timestamp()


def progress_text(status: Status) -> str:
    """How far a run got: "12/200" (epochs done / total)."""
    return f"{status.epochs_done}/{'?' if status.epochs_total is None else status.epochs_total}"


class Status(Record):
    """status.json: a run's state (running, interrupted, failed, done; trained: training finished and its
    measurement left to the next --resume, heartjobs run --defer-evaluation; None: no status), its heartbeat, start
    and end times, epochs done, error, the phase it is in ("evaluating"; none while training or once done),
    and the process that runs it (liveness.this_process(): pid, host, pid_started), which `resumed` times
    took it over."""

    state: str | None = None
    started: str | None = None
    ended: str | None = None
    heartbeat: str | float | None = None
    epochs_done: int = 0
    epochs_total: int | None = None
    error: str | None = None
    pid: int | None = None
    host: str | None = None
    pid_started: int | None = None
    resumed: int = 0
    phase: str | None = None

    def process(self) -> dict:
        """The process the status names, as liveness.this_process() records one."""
        return {"pid": self.pid, "host": self.host, "pid_started": self.pid_started, "heartbeat": self.heartbeat}


def read_status(path: Path) -> Status:
    """A status file's record; an empty one (state None) when it is missing or unreadable."""
    return Status.read(path) or Status()


class StatusFile:
    """status.json of one run, kept up to date by the process that runs it."""

    def __init__(self, path: Path, epochs_total: int, process: dict):
        previous = read_status(path)
        # a resume is another process taking the run over (its own first record, written when the
        # version was claimed, is no resume)
        # (nor is measuring a run left "trained": that is the step after its training, by design in another
        # process)
        taken_over = previous.state not in (None, "trained") and any(
            getattr(previous, k) != process.get(k) for k in ("pid", "pid_started", "host")
        )
        self.path = Path(path)
        self.data = Status(
            state="running",
            started=previous.started or now_iso(),
            ended=None,
            heartbeat=now_iso(),
            epochs_done=previous.epochs_done,
            epochs_total=epochs_total,
            error=None,
            **process,
            resumed=previous.resumed + (1 if taken_over else 0),
        )
        self._last_beat = 0.0
        self.write()

    def write(self) -> None:
        self.data.write(self.path)

    def beat(self, *, force: bool = False, **fields) -> None:
        """Update the heartbeat (at most every RUN_BEAT_S unless forced or fields change)."""
        for key, value in fields.items():
            setattr(self.data, key, value)
        if force or fields or time.monotonic() - self._last_beat >= RUN_BEAT_S:
            self._last_beat = time.monotonic()
            self.data.heartbeat = now_iso()
            self.write()

    def finish(self, state: str, error: str | None = None) -> None:
        self.data.state, self.data.error, self.data.ended, self.data.heartbeat = state, error, now_iso(), now_iso()
        if state == "done":  # a done run is in no phase; a failed one keeps the phase it failed in
            _forget_phase(self.data)
        self.write()


def _forget_phase(status: Status) -> None:
    """No phase: left out of the file, as a record that never had one."""
    status.phase = None
    status.model_fields_set.discard("phase")


def mark_done(path: Path) -> None:
    """Mark a run done whose training had finished and only its evaluation had failed."""
    status = read_status(path)
    _forget_phase(status)
    status.state, status.error, status.ended = "done", None, now_iso()
    status.write(path)
