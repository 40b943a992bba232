"""Locks: the machine-wide lock of a device (one job per GPU), a run folder's lock and a configuration's
(exit 75 when held), all advisory flock()s on files in a folder only their owner may write."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
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
    user (sticky, like /tmp): workers may run as different uids. A folder someone else could have prepared
    (a link, another user's, or writable by others without the sticky bit) is refused."""
    folder = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "heartjobs-locks")
    if not folder.exists() and not folder.is_symlink():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            folder.chmod(0o1777)
    check_lock_folder(folder)
    return folder


def check_lock_folder(folder: Path) -> None:
    """Refuse, in one line naming it, a lock folder that another user could have planted links in: a
    symbolic link, a folder owned by neither this user nor root, or one writable by others without the
    sticky bit (whose files anyone could replace)."""
    try:
        info = os.lstat(folder)
    except OSError as exc:
        raise HeartjobsError(f"{folder}: cannot use it as the lock folder ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise HeartjobsError(f"{folder}: the lock folder is a symbolic link or not a folder; refusing it")
    if info.st_uid not in (os.geteuid(), 0):
        raise HeartjobsError(f"{folder}: the lock folder belongs to another user (uid {info.st_uid}); refusing it")
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise HeartjobsError(f"{folder}: the lock folder is writable by others without the sticky bit; refusing it")


def open_lock_file(path: Path, shared: bool = False) -> int:
    """A lock file opened for flock without following a link (created 666 less the umask when missing, as
    open() would); `shared`: made 666 whatever the umask, when it is this user's own, so that every uid can
    open it. A link or anything but a regular file is refused; another user's file is never chmod'ed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HeartjobsError(f"{path}: a symbolic link where a lock file belongs; refusing to follow it") from None
        raise HeartjobsError(f"{path}: cannot open the lock file ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise HeartjobsError(f"{path}: not a regular file; refusing it as a lock file")
    if shared and info.st_uid == os.geteuid():
        with contextlib.suppress(OSError):  # the umask may have narrowed it; another uid's worker must open it
            os.fchmod(fd, 0o666)
    return fd


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
    with open(open_lock_file(Path(path)), "r+b") as f:
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
    with open(open_lock_file(path, shared=True), "r+b") as f:
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
