"""Processes: who is running (pid + start time, or heartbeat age elsewhere), the stop signals, the one
way to start `heartjobs run` as a child, and the machine-wide lock of a device.

A job runs in its own process so that a crash, an out-of-memory error or a segfault takes only that job
down and frees its GPU memory. The child gets SIGTERM when its parent dies (PR_SET_PDEATHSIG), so an
orphaned job writes a checkpoint and stops rather than running on unwatched.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from heartjobs.errors import HeartjobsError
from heartjobs.progress import console
from heartjobs.records import Record
from heartjobs.store.status import heartbeat_age

# The signals `heartjobs run` turns into "checkpoint, then stop" (SIGUSR2 is what Slurm sends before a
# time limit); its exit code is then 128 + the signal number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


# --- the CPUs a job may use ---


def allotted_cpus() -> tuple[int, str]:
    """How many CPUs this process may use, and what said so: the fewest of the Slurm allocation
    (SLURM_CPUS_PER_TASK, else SLURM_CPUS_ON_NODE), the container's CPU quota (cgroup v2 cpu.max or v1
    cpu.cfs_quota_us, rounded up) and the CPUs it may run on (its affinity)."""
    found = [(len(os.sched_getaffinity(0)), "CPU affinity")]
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        if (value := os.environ.get(name, "")).isdigit() and int(value) > 0:
            found.append((int(value), name))
            break
    if (quota := _cgroup_cpu_quota()) is not None:
        found.append((quota, "cgroup CPU quota"))
    return min(found)


def _cgroup_cpu_quota(root: Path = Path("/")) -> int | None:
    """The tightest CPU quota on this process's cgroup and those above it, in whole CPUs (rounded up), or
    None when none is set. cgroup v2: cpu.max ("max 100000" or "200000 100000") from the process's own
    cgroup up to the root; v1: cpu.cfs_quota_us / cpu.cfs_period_us likewise in the cpu controller's
    hierarchy. `root` is for tests (a fake /proc and /sys tree)."""
    import math

    quotas: list[int] = []
    with contextlib.suppress(OSError):
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            _, controllers, own = line.split(":", 2)
            if controllers == "":
                mount, read = root / "sys/fs/cgroup", _cgroup_v2_quota
            elif "cpu" in controllers.split(","):
                mount, read = root / "sys/fs/cgroup" / controllers, _cgroup_v1_quota
                if not mount.is_dir():  # mounted under one of the controller names only
                    mount = root / "sys/fs/cgroup/cpu"
            else:
                continue
            folder = Path(own.lstrip("/"))
            for level in [folder, *folder.parents]:  # in a container the own path may not exist: skipped
                with contextlib.suppress(OSError, ValueError, IndexError, ZeroDivisionError):
                    if (cpus := read(mount / level)) is not None:
                        quotas.append(math.ceil(cpus))
    return max(1, min(quotas)) if quotas else None


def _cgroup_v2_quota(folder: Path) -> float | None:
    quota, period = (folder / "cpu.max").read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _cgroup_v1_quota(folder: Path) -> float | None:
    quota = int((folder / "cpu.cfs_quota_us").read_text())
    return None if quota < 0 else quota / int((folder / "cpu.cfs_period_us").read_text())


def use_allotted_cpus() -> None:
    """Set torch's intra-op threads to the CPUs this process was given (unless OMP_NUM_THREADS says how
    many): torch starts one per core of the machine, and two 1-CPU Slurm tasks on a 2-core node then ran
    25 times slower than with one thread each."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    cpus, _ = allotted_cpus()
    if cpus < torch.get_num_threads():
        torch.set_num_threads(cpus)


# --- liveness ---


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


# --- stop signals ---


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


# --- the child: `heartjobs run` ---


class RunResult(Record):
    """The result record of `heartjobs run --result FILE` (heartjobs.runner.lifecycle writes it): how the run
    ended (done, interrupted, failed), its run folder, its error and exit code. What a queue worker reads instead of the
    log."""

    spec: str | None = None
    run_dir: str | None = None
    state: str | None = None
    error: str | None = None
    exit_code: int | None = None


def run_command(spec_path: Path, *, resume: bool, result_file: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "heartjobs", "run", str(spec_path)]
    if resume:
        command.append("--resume")
    if result_file is not None:
        command += ["--result", str(result_file)]
    return command


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child: have the kernel send it `sig` when its parent dies (Linux' PR_SET_PDEATHSIG; elsewhere
    nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG


# The pid of the process that started a `heartjobs run` child, which the child dies with (SIGTERM: it
# checkpoints and stops). The child sets that up itself (die_with_starter): a preexec_fn would run
# between fork and exec, which Python documents as unsafe while other threads run (the worker's heartbeat
# does), and could deadlock the child before it ever ran.
STARTER_ENV = "HEARTJOBS_DIE_WITH"


def start_run(spec_path: Path, *, resume: bool, result_file: Path | None = None, **popen) -> subprocess.Popen:
    """Start `heartjobs run SPEC [--resume] [--result FILE]` as a child that stops (SIGTERM) when this
    process dies; popen: stdout, stderr, cwd, env as for subprocess.Popen. The result file (see
    heartjobs.runner.lifecycle) says how the run ended."""
    command = run_command(spec_path, resume=resume, result_file=result_file)
    env = {**(popen.pop("env", None) or os.environ), STARTER_ENV: str(os.getpid())}
    return subprocess.Popen(command, env=env, **popen)


def die_with_starter() -> None:
    """In `heartjobs run`, once its stop signals are requests: be sent SIGTERM when the process that
    started it (start_run) dies, and stop now if it has died already. Nothing when started otherwise."""
    starter = os.environ.pop(STARTER_ENV, "")
    if not starter.isdigit():
        return
    die_with_parent(signal.SIGTERM)
    if os.getppid() != int(starter):  # it died before that took effect: the same request
        os.kill(os.getpid(), signal.SIGTERM)


# --- the device lock ---


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
