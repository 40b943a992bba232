"""Versioned artifact folders: artifacts/<job>/vNNNN, claimed atomically, never reused, plus status.json.

A version number is claimed with mkdir, which succeeds for exactly one process, so two runs of the same
job never share a folder. `latest` points at the newest version.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from heartjobs import __version__, atomic

_VERSION = re.compile(r"v(\d{4,})")
STATUS_FILE = "status.json"
LATEST = "latest"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions(job_root: Path) -> list[Path]:
    """The job's version folders, oldest first."""
    if not job_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in job_root.iterdir() if (m := _VERSION.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def claim_version(job_root: Path) -> Path:
    """Create and return the next free vNNNN folder; safe against concurrent claims."""
    job_root.mkdir(parents=True, exist_ok=True)
    existing = versions(job_root)
    number = version_number(existing[-1]) + 1 if existing else 1
    while True:
        candidate = job_root / f"v{number:04d}"
        try:
            candidate.mkdir()
        except FileExistsError:
            number += 1
            continue
        point_latest(job_root, candidate)
        return candidate


def point_latest(job_root: Path, version: Path) -> None:
    """Make job_root/latest a symlink to `version`, replaced atomically."""
    tmp = job_root / f".{LATEST}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(version.name)
    os.replace(tmp, job_root / LATEST)


def read_status(run_dir: Path) -> dict:
    return atomic.read_json(run_dir / STATUS_FILE)


class StatusFile:
    """status.json of one run: state, heartbeat, start and end times, epochs done, error."""

    def __init__(self, run_dir: Path, epochs_total: int):
        previous = read_status(run_dir)
        self.path = run_dir / STATUS_FILE
        self.data: dict = {
            "state": "running",
            "started": previous.get("started", now_iso()),
            "ended": None,
            "heartbeat": now_iso(),
            "epochs_done": previous.get("epochs_done", 0),
            "epochs_total": epochs_total,
            "error": None,
            **this_process(),
            "resumed": previous.get("resumed", 0) + (1 if previous else 0),
        }
        self._last_beat = 0.0
        self.write()

    def write(self) -> None:
        atomic.write_json(self.path, self.data)

    def beat(self, *, force: bool = False, **fields) -> None:
        """Update the heartbeat (at most every 10 s unless forced or fields change)."""
        self.data.update(fields)
        if force or fields or time.monotonic() - self._last_beat >= 10:
            self._last_beat = time.monotonic()
            self.data["heartbeat"] = now_iso()
            self.write()

    def finish(self, state: str, error: str | None = None) -> None:
        self.data.update(state=state, error=error, ended=now_iso(), heartbeat=now_iso())
        self.write()


def newest_unfinished(job_root: Path) -> Path | None:
    """The newest version whose status is not done (running, interrupted, failed, or never started)."""
    for run_dir in reversed(versions(job_root)):
        if read_status(run_dir).get("state") != "done":
            return run_dir
    return None


def version_number(run_dir: Path) -> int:
    return int(run_dir.name[1:])


def finished_version(spec, after: int = 0) -> Path | None:
    """The newest finished (done) version, numbered above `after`, made with this ResolvedSpec's
    configuration (its spec hash)."""
    for run_dir in reversed(versions(spec.run_root)):
        if version_number(run_dir) <= after:
            break
        if spec_hash_of(run_dir) == spec.spec_hash and read_status(run_dir).get("state") == "done":
            return run_dir
    return None


def spec_hash_of(run_dir: Path) -> str | None:
    return atomic.read_json(run_dir / "resolved.json").get("spec_hash")


def this_process() -> dict:
    """Who is writing: pid, host, and the pid's start time, which tells this process from a later one
    given the same pid (after a container restart, say)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_started": process_start_ticks(os.getpid())}


def process_alive(record: dict) -> bool:
    """Whether the process a this_process() record names still runs (only knowable on the same host)."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    pid = int(record["pid"])
    started = record.get("pid_started")
    return pid_running(pid) and (started is None or process_start_ticks(pid) == started)


def alive(record: dict, heartbeat: float | None, stale_after: float) -> bool:
    """Whether the process a this_process() record names is alive: on this host, by its pid and start
    time; on another, by its heartbeat (seconds since the epoch) being younger than stale_after."""
    if record.get("host") == socket.gethostname():
        return process_alive(record)
    return heartbeat is not None and time.time() - heartbeat < stale_after


def pid_running(pid: int) -> bool:
    """Whether process `pid` exists on this machine and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return fields is None or fields[0] != "Z"


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), to tell it from a later process given the
    same pid; None where /proc can't say."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None  # field 22 of the file, starttime


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "(comm)": state, ppid, ...; None where /proc can't say."""
    with contextlib.suppress(OSError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()
    return None


def environment(device: str) -> dict:
    """What ran the job: versions, device, host, git commit, command line."""
    import torch

    cuda = torch.cuda.is_available()
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        commit = result.stdout.strip() if result.returncode == 0 else None
    return {
        "heartjobs": __version__,
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda and device.startswith("cuda") else None,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": commit,
        "command": sys.argv,
        "time": now_iso(),
    }
