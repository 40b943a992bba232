"""Stop signals as requests: SIGTERM, SIGINT and SIGUSR2 (Slurm's warning before a time limit) become
"checkpoint at the next safe point, then stop", and the exit code of a stopped run is 128 + the signal."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# The signals `heartjobs run` turns into "checkpoint, then stop" (SIGUSR2 is what Slurm sends before a
# time limit); its exit code is then 128 + the signal number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class StopRequest:
    """A stop asked for by a stop signal: the signal's number once one came (None before), which the job
    honours at its next safe point (heartjobs.runner.lifecycle)."""

    def __init__(self) -> None:
        self._signal: int | None = None

    @property
    def signal(self) -> int | None:
        return self._signal

    def request(self, signum: int) -> None:
        self._signal = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn the stop signals into a stop request that the caller honours at its next safe point; the
    previous handlers come back afterwards."""
    requested, previous = _request_stop_on_signals()
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_on_signals_until_exit() -> StopRequest:
    """The same stop request, for a process whose one job is the run (`heartjobs run`): never handed
    back, so a signal at any moment, setup or after the job finished included, is a request and not a
    death (a run that finished exits 0 however late the signal came)."""
    return _request_stop_on_signals()[0]


def _request_stop_on_signals() -> tuple[StopRequest, dict]:
    requested = StopRequest()

    def handler(signum, frame):
        requested.request(signum)

    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    return requested, previous


def stopped_by_signal(code: int | None) -> bool:
    """Whether an exit code says the job was stopped by a signal after writing its checkpoint."""
    return code is not None and code - 128 in STOP_SIGNALS
