"""The array task: SpecTask, the submitit Checkpointable that runs one job spec with `heartjobs run`.

submitit pickles it into the submission's logs/ and each start of the task (the first, a requeue, a
restart after a preemption) unpickles it: a pickle records the class by module and name, so the names
that pickles of earlier versions recorded (heartjobs.cluster.SpecTask, heartjobs.cluster.submit.SpecTask)
must keep naming this class (heartjobs/cluster/__init__.py, heartjobs/cluster/submit.py import it).

On the signal Slurm sends before a time limit (USR2, --signal-delay seconds ahead) the task stops its
`heartjobs run`, which writes a checkpoint at the exact batch, and submitit requeues the task, which then
resumes from that checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import submitit

from heartjobs.cluster.options import parse_time
from heartjobs.errors import HeartjobsError
from heartjobs.store.rundir import RunDir, finished_version, newest_unfinished, version_number
from heartjobs.store.status import RUN_DEAD_AFTER_S
from heartjobs.system import launching, liveness, locks, stopping

RUNNING_POLL_S = 10.0  # how often a task waiting for a run alive elsewhere looks again
# How much earlier than --signal-delay says the limit's signal may come: up to 60 s by Slurm's sbatch
# documentation, and slurmctld looks at time limits only every ~30 s (seen here: 67-90 s before the end of
# a 2-minute slot with --signal-delay 60)
SIGNAL_EARLY_S = 90


class SpecTask(submitit.helpers.Checkpointable):
    """One array task: run one job spec to the end with `heartjobs run` in a child process.

    Every start of the task (the first, a requeue after its checkpoint, a restart by Slurm after a
    preemption or node failure) does the same: skip if a version of this configuration numbered above
    `after` is finished, resume it if one is unfinished, else start a new version. `after` is 0, or with
    --force the newest version at submit time. lock: (k, n) to take device slot k of n (local tasks);
    None on Slurm, which allocates the devices. limit_s and signal_delay_s: the task's time limit and how
    long before its end the stop signal comes, to tell a timeout from a preemption.
    """

    # a task pickled by an older heartjobs (pending or requeued across an upgrade) has neither field
    limit_s: float | None = None
    signal_delay_s: float = 120.0

    def __init__(
        self,
        spec_path: str,
        cwd: str,
        after: int = 0,
        lock: tuple[int, int] | None = None,
        stop_wait_s: float = 90.0,
        limit_s: float | None = None,
        signal_delay_s: float = 120.0,
    ):
        self.spec_path, self.cwd, self.after, self.lock, self.stop_wait_s = spec_path, cwd, after, lock, stop_wait_s
        self.limit_s, self.signal_delay_s = limit_s, signal_delay_s
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_process": None}

    def __call__(self) -> str:
        from heartjobs.spec.loading import load_spec

        os.chdir(self.cwd)  # the specs' relative paths (data, artifacts) are the project folder's
        self._count_timeouts_by_the_limit()
        spec = load_spec(Path(self.spec_path))
        told = False
        while (busy := running_elsewhere(spec, self.after)) is not None:
            if not told:  # e.g. a node that failed: its heartbeat goes stale within RUN_DEAD_AFTER_S
                print(f"{spec.name}: {busy} is running in another process; waiting for it", flush=True)
                told = True
            time.sleep(RUNNING_POLL_S)
        if (done := finished_version(spec, self.after)) is not None:
            print(f"{spec.name}: finished in {done}; nothing to do", flush=True)
            return str(done)
        resume = resumable(spec, self.after) is not None
        with self._device():
            self._process = launching.start_run(Path(self.spec_path), resume=resume, cwd=self.cwd)
            # poll() rather than wait(): the requeue signal's handler (checkpoint below) looks at it too
            while (code := self._process.poll()) is None:
                time.sleep(0.5)
        if code == 0:
            return str(finished_version(spec, self.after))
        if stopping.stopped_by_signal(code):
            # stopped from outside (scontrol requeue, a preemption's SIGTERM, scancel): normal operation, not a
            # failure, so one line and no result file (an exception would write an error result); a requeue
            # starts this task again and it resumes from the checkpoint
            print(
                f"{spec.name}: stopped by signal {code - 128} after a checkpoint; a requeue or a resubmission "
                "resumes it",
                flush=True,
            )
            raise SystemExit(code)
        raise HeartjobsError(f"{self.spec_path}: heartjobs run exited with code {code}; its error is above")

    def _count_timeouts_by_the_limit(self) -> None:
        """Make submitit count a stop signal as a timeout only when it came for the time limit.

        submitit counts one as a timeout once 80 % of the limit, or all but 10 minutes of it, has passed:
        under a 50-minute limit a preemption late in the slot uses up --max-timeouts, under 10 minutes
        every one does. The limit's signal comes signal_delay_s before the end, up to SIGNAL_EARLY_S
        earlier: a signal with more time left than that is a preemption (uncounted), one with less a
        timeout. Only a preemption in that last window is still counted as a timeout."""
        handler = getattr(signal.getsignal(signal.SIGUSR2), "__self__", None)
        if self.limit_s is None or not hasattr(handler, "has_timed_out") or not hasattr(handler, "_start_time"):
            return  # not started by submitit (a test calling the task), or a submitit that works otherwise

        def has_timed_out() -> bool:
            left, source = time_left(handler._start_time, self.limit_s)
            timed_out = left <= self.signal_delay_s + SIGNAL_EARLY_S
            why = "the time limit" if timed_out else "a preemption (or a requeue): not counted as a timeout"
            print(f"stop signal with {left:.0f} s of the {self.limit_s:.0f} s limit left ({source}): {why}", flush=True)
            return timed_out

        handler.has_timed_out = has_timed_out

    @contextlib.contextmanager
    def _device(self) -> Iterator[None]:
        if self.lock is None:
            yield
            return
        k, n = self.lock
        with locks.device_lock(locks.default_slot() + (f".{k}" if n > 1 else "")):
            yield

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on the requeue signal: stop the run (it writes a checkpoint at the current
        batch), then hand submitit this same task to requeue; its next start resumes the run."""
        process = self._process
        if process is not None and not liveness.exited(process):
            os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_wait_s  # the requeue must happen before Slurm's kill
            while not liveness.exited(process) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not liveness.exited(process):  # as Slurm would at the limit: the requeued task must not wait on it
                os.kill(process.pid, signal.SIGKILL)
        return submitit.helpers.DelayedSubmission(self)


def time_left(started: float, limit_s: float) -> tuple[float, str]:
    """Seconds this task has left, and where that came from: Slurm's own count (squeue %L), which starts
    with the job rather than with this process (after --setup lines, a container's start-up); else the
    limit less the time since `started` (the local executor, or squeue unavailable)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        with contextlib.suppress(OSError, subprocess.SubprocessError, HeartjobsError):
            out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return parse_time(out.stdout.strip()) * 60, "squeue"
    return limit_s - (time.time() - started), "since this task started"


def resumable(spec, after: int = 0) -> Path | None:
    """The version `heartjobs run --resume` would continue, if it was made with this configuration
    (and is numbered above `after`)."""
    run_dir = newest_unfinished(spec.run_root)
    if run_dir is None or version_number(run_dir) <= after:
        return None
    return run_dir if RunDir(run_dir).spec_hash() == spec.spec_hash else None


def running_elsewhere(spec, after: int = 0) -> Path | None:
    """A version of this configuration whose run is alive: its process, on this host; its heartbeat
    younger than RUN_DEAD_AFTER_S, on another."""
    run_dir = resumable(spec, after)
    if run_dir is None:
        return None
    status = RunDir(run_dir).status()
    if status.state != "running":
        return None
    return run_dir if liveness.alive(status.process(), RUN_DEAD_AFTER_S) else None
