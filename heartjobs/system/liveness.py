"""Who is running: a process record (pid, host, start time), whether it still runs here (pid and start
time) or elsewhere (its heartbeat's age), and whether a child has exited."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from pathlib import Path

from heartjobs.store.status import heartbeat_age


def this_process() -> dict:
    """Who is writing: pid, host, and the pid's start time, which tells this process from a later one
    given the same pid (after a container restart, say)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_started": process_start_ticks(os.getpid())}


def process_alive(record: dict) -> bool:
    """Whether the process a this_process() record names still runs (only knowable on the same host)."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    try:
        pid = int(record["pid"])
    except (TypeError, ValueError):
        return False
    started = record.get("pid_started")
    return pid_running(pid) and (started is None or process_start_ticks(pid) == started)


def alive(record: dict, stale_after: float) -> bool:
    """Whether the process a this_process() record names is alive: on this host, by its pid and start
    time; on another, by the record's heartbeat (see heartjobs.store.status) being younger than stale_after."""
    if record.get("host") == socket.gethostname():
        return process_alive(record)
    age = heartbeat_age(record)
    return age is not None and age < stale_after


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


def exited(process: subprocess.Popen) -> bool:
    """Whether a child has exited, without reaping it and without Popen's lock, which the code a signal
    handler interrupted may hold."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
