"""Run `heartjobs run` as a child process: the one way the queue worker and cluster tasks start a job.

A job runs in its own process so that a crash, an out-of-memory error or a segfault takes only that job
down and frees its GPU memory. The child gets SIGTERM when its parent dies (PR_SET_PDEATHSIG), so an
orphaned job writes a checkpoint and stops rather than running on unwatched.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from pathlib import Path

# The signals `heartjobs run` turns into "checkpoint, then stop" (see training/run.py); its exit code is
# then 128 + the signal number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def run_command(spec_path: Path, *, resume: bool) -> list[str]:
    command = [sys.executable, "-m", "heartjobs", "run", str(spec_path)]
    return [*command, "--resume"] if resume else command


def stopped_by_signal(code: int | None) -> bool:
    """Whether an exit code says the job was stopped by a signal after writing its checkpoint."""
    return code is not None and code - 128 in STOP_SIGNALS


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(spec_path: Path, *, resume: bool, **popen) -> subprocess.Popen:
    """Start `heartjobs run SPEC [--resume]`; popen: stdout, stderr, cwd, env as for subprocess.Popen."""
    return subprocess.Popen(run_command(spec_path, resume=resume), preexec_fn=_die_with_parent, **popen)
