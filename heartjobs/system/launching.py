"""The one way to start `heartjobs run` as a child: its command line, its result record, and dying with
its starter.

A job runs in its own process so that a crash, an out-of-memory error or a segfault takes only that job
down and frees its GPU memory. The child gets SIGTERM when its parent dies (PR_SET_PDEATHSIG), so an
orphaned job writes a checkpoint and stops rather than running on unwatched."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from heartjobs.records import Record


class RunResult(Record):
    """The result record of `heartjobs run --result FILE` (heartjobs.runner.lifecycle writes it): how the run
    ended (done; trained: with --defer-evaluation, trained and its measurement left for a later --resume;
    interrupted; failed), its run folder, its error and exit code. What a queue worker reads instead of the
    log."""

    spec: str | None = None
    run_dir: str | None = None
    state: str | None = None
    error: str | None = None
    exit_code: int | None = None


def run_command(
    spec_path: Path, *, resume: bool, result_file: Path | None = None, defer_evaluation: bool = False
) -> list[str]:
    command = [sys.executable, "-m", "heartjobs", "run", str(spec_path)]
    if resume:
        command.append("--resume")
    if defer_evaluation:
        command.append("--defer-evaluation")
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


def start_run(
    spec_path: Path, *, resume: bool, result_file: Path | None = None, defer_evaluation: bool = False, **popen
) -> subprocess.Popen:
    """Start `heartjobs run SPEC [--resume] [--result FILE] [--defer-evaluation]` as a child that stops
    (SIGTERM) when this process dies; popen: stdout, stderr, cwd, env as for subprocess.Popen. The result
    file (see heartjobs.runner.lifecycle) says how the run ended."""
    command = run_command(spec_path, resume=resume, result_file=result_file, defer_evaluation=defer_evaluation)
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
