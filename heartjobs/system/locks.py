"""Locks: the machine-wide lock of a device (one job per GPU), a run folder's lock and a configuration's
(exit 75 when held), all advisory flock()s on files in a folder only their owner may write."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from heartjobs.errors import HeartjobsError
from heartjobs.progress import console


def default_slot() -> str:
    """The device a worker drives, named by what it physically is: the first visible GPU by its UUID
    (the same name on the host and in every container, whatever index the GPU has there), or the CPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
        return f"gpu-{uuid}" if uuid else f"cuda{(os.environ.get('CUDA_VISIBLE_DEVICES') or '0').split(',')[0]}"
    return "cpu"


LOCK_DIR_ENV = "HEARTJOBS_LOCK_DIR"


def lock_dir() -> Path:
    """Where the device locks live: $HEARTJOBS_LOCK_DIR, else <tmp>/heartjobs-locks. Compose mounts the
    host's folder into every container, so host and containers share one lock per device. Open to every
    user (sticky, like /tmp): workers may run as different uids."""
    folder = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "heartjobs-locks")
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            folder.chmod(0o1777)
    return folder


class Busy(HeartjobsError):
    """What another process holds (a run, a configuration): nothing wrong with the job itself. Its exit
    code, 75 (EX_TEMPFAIL), lets a queue worker tell it from a failure."""

    exit_code = 75


@contextlib.contextmanager
def exclusive(path: Path, busy: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock file `path` for this process alone (the kernel releases it when the process dies);
    raises Busy(busy) when another process still holds it after `wait_s` seconds."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(path, "a+") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(busy) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold a run folder for this process alone, for the whole run. Taking over a version is this lock,
    not a check of its status: two resumes of one version a moment apart cannot both train it."""
    from heartjobs.store.rundir import RunDir

    return exclusive(Path(folder) / RunDir.RUN_LOCK, f"{folder}: another process is running it; not running it twice")


def config_lock(run_root: Path, spec_hash: str, wait_s: float = 0.0) -> contextlib.AbstractContextManager[None]:
    """Hold one configuration (a spec hash under its job's artifacts folder) for this process alone, from
    choosing its version to the end: whoever runs it (a worker's job, a user's run or --resume), the same
    configuration never trains twice at once. `wait_s` covers a holder that has stopped and is exiting."""
    return exclusive(
        Path(run_root) / f".config-{spec_hash}.lock",
        f"the same configuration (spec {spec_hash}) is being run by another process; not running it twice",
        wait_s,
    )


@contextlib.contextmanager
def device_lock(slot: str, should_stop: Callable[[], bool] = lambda: False) -> Iterator[bool]:
    """Hold the machine-wide lock of one device (released by the kernel if this process dies). Waits
    while another worker holds it; yields False if should_stop() said so before the lock came free."""
    path = lock_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', slot)}.lock"
    with open(path, "a+") as f:
        with contextlib.suppress(OSError):  # another uid's worker must be able to open it too
            os.fchmod(f.fileno(), 0o666)
        told = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop():
                    yield False
                    return
                if not told:
                    console.print(f"device {slot} is busy with another job; waiting for it")
                    told = True
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
