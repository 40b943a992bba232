"""Atomic writes: everything lands in a temporary sibling first and appears by a single rename."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from heartjobs.errors import HeartjobsError


def _umask() -> int:
    """The process's umask, read without changing it (Linux >= 4.7 says it in /proc/self/status): setting
    it to 0 and back, as os.umask alone can read it, would let a file another thread creates meanwhile
    get mode 666. Only where /proc does not say it, that."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_mode(path: str | Path, directory: bool) -> None:
    """mkstemp and mkdtemp create owner-only entries; give them what open() and mkdir() would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; whatever is written there replaces `path` in one rename
    when the block succeeds, and is deleted when it fails. Readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    _usual_mode(tmp, directory=False)
    full = False
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = _out_of_space(exc, path.parent)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # first: the space it took is what the caller's status write needs
        if not full:
            raise
    if full:  # raised out here: the failed writer's frames (and any file it held open) are gone by now
        raise OutOfSpace(path)


class OutOfSpace(HeartjobsError, OSError):
    """A write that found its disk full: one line naming the path and what is free there (after the
    partial file was removed). An OSError too, so that handlers of failed writes still catch it."""

    def __init__(self, path: Path, needed: int | None = None):
        free = free_bytes(Path(path).parent)
        text = f"{path}: no space left on the device ({free / 2**20:.1f} MiB free there"
        text += f", about {needed / 2**20:.1f} MiB needed)" if needed else ")"
        HeartjobsError.__init__(self, text)
        self.errno = errno.ENOSPC


def free_bytes(folder: Path) -> int:
    """Bytes free for this user in `folder`'s file system."""
    return shutil.disk_usage(folder).free


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """ENOSPC itself, or a writer that wrapped it without its errno (torch.save: "file write failed")
    while the disk is in fact full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "file write failed" in str(exc):
            return free_bytes(folder) < 2**20
        exc = exc.__cause__ or exc.__context__
    return False


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def read_json(path: Path) -> dict:
    """The reading side of write_json: a JSON object, or {} when the file is missing or not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep to decode
        return {}
    return data if isinstance(data, dict) else {}


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines to a line-oriented log (JSON lines), in one write. A last line cut short by a
    crash is ended first, so it stays one bad line a reader skips instead of swallowing the new record."""
    path = Path(path)
    text = "".join(line.rstrip("\n") + "\n" for line in lines)
    with open(path, "ab+") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode())


def copy_file(source: Path, path: Path) -> None:
    """A copy of `source` at `path`, appearing whole or not at all."""
    with replacing(Path(path)) as tmp:
        shutil.copyfile(source, tmp)


def write_json(path: Path, obj: object) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def temp_dir(final: Path) -> Path:
    """A new, empty hidden folder beside `final` (named after it), with the permissions mkdir would give."""
    tmp = Path(tempfile.mkdtemp(dir=Path(final).parent, prefix=f".{Path(final).name}.", suffix=".tmp"))
    _usual_mode(tmp, directory=True)
    return tmp


@contextlib.contextmanager
def staged_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; on success rename it to `final`.

    On any error the temporary directory is removed, so no partial output is ever left behind.
    With `replace`, an existing `final` is swapped out only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(final)
    try:
        yield tmp
        if replace and final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
