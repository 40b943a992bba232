"""Atomic writes: everything lands in a temporary sibling first and appears by a single rename."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from heartjobs.errors import HeartjobsError, one_line


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
        data = loads_json(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def open_for_append(path: Path, *, read: bool = False):
    """A log opened for appending in binary (created 666 less the umask when missing), without following a
    link: a log in a folder others can write (a queue, a run folder from elsewhere) may have been replaced
    by a link to a file of root's. A link or anything but a regular file is a one-line error naming it."""
    flags = (os.O_RDWR if read else os.O_WRONLY) | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o666)  # O_NONBLOCK: a FIFO there must not hang the open
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HeartjobsError(
                f"{path}: a symbolic link where heartjobs appends to a log; not following it"
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise HeartjobsError(f"{path}: not a regular file where heartjobs appends to a log")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab+" if read else "ab")


# What heartjobs writes nests a few levels; a file from elsewhere may nest a thousand in a kilobyte, which
# Python's JSON parser (and anything that walks the value: repr, json.dumps) meets with a RecursionError.
MAX_JSON_DEPTH = 64


def loads_json(text: str) -> Any:
    """json.loads for a file's text: nesting deeper than MAX_JSON_DEPTH is a ValueError like any other text
    that is not JSON, so every reader that takes a damaged file for a missing one does so here too."""
    too_deep = f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(too_deep) from None
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(too_deep)
    return value


def json_object(text: str | bytes, where: object) -> dict:
    """A JSON object from a file or a store that is not vetted (a manifest, a volume's attributes); anything
    else, a text nested too deep included, is a one-line error naming `where`."""
    try:
        value = loads_json(text.decode() if isinstance(text, bytes) else text)
    except UnicodeDecodeError:
        raise HeartjobsError(f"{where}: not UTF-8 text, so not valid JSON") from None
    except ValueError as exc:
        raise HeartjobsError(f"{where}: not valid JSON ({one_line(exc, 120)})") from None
    if not isinstance(value, dict):
        raise HeartjobsError(f"{where}: not a JSON object")
    return value


def nesting_depth(value: Any) -> int:
    """How many lists and dicts deep `value` nests (a scalar: 0), counted without recursion: the value may
    be deeper than Python's recursion limit."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children)
    return deepest


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines to a line-oriented log (JSON lines), in one write. A last line cut short by a
    crash is ended first, so it stays one bad line a reader skips instead of swallowing the new record."""
    path = Path(path)
    text = "".join(line.rstrip("\n") + "\n" for line in lines)
    with open_for_append(path, read=True) as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode())


def copy_file(source: Path, path: Path) -> None:
    """A copy of `source` at `path`, appearing whole or not at all."""
    with replacing(Path(path)) as tmp:
        shutil.copyfile(source, tmp)


def dumps_json(obj: object, indent: int | None = None) -> str:
    """The one way heartjobs writes JSON: strict JSON, which every parser reads. A float that is not a
    finite number (a diverged loss, an undefined correlation) is written as null, never as the NaN,
    Infinity or -Infinity Python's json would write; a value that must not be lost that way (FRD's log of
    a zero distance) is turned into a recorded reason before it gets here."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_json(path: Path, obj: object) -> None:
    write_bytes(path, (dumps_json(obj, indent=2) + "\n").encode())


def temp_dir(final: Path) -> Path:
    """A new, empty hidden folder beside `final` (named after it), with the permissions mkdir would give."""
    tmp = Path(tempfile.mkdtemp(dir=Path(final).parent, prefix=f".{Path(final).name}.", suffix=".tmp"))
    _usual_mode(tmp, directory=True)
    return tmp


def refuse_cwd_or_above(folder: Path) -> None:
    """Refuse a folder that is the current folder or holds it (".", "..", "/"): a folder made whole (staged
    beside it, then renamed into place) can't be that one, and replacing it would move the ground away
    under this process and everything else in it."""
    folder = Path(folder)
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current folder was removed: there is nothing under it to protect
        return
    if cwd.is_relative_to(folder.resolve()):
        raise HeartjobsError(
            f"{folder}: the current folder, or a folder holding it, can't be replaced; give a new folder"
        )


@contextlib.contextmanager
def staged_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; on success rename it to `final`.

    On any error the temporary directory is removed, so no partial output is ever left behind.
    With `replace`, an existing `final` is swapped out only after the new one is complete. `final` may not
    be the current folder or hold it (refuse_cwd_or_above).
    """
    final = Path(final)
    refuse_cwd_or_above(final)
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
