"""Fan job specs out as one submitit job array: on a Slurm cluster, or on this machine with submitit's
local executor. Each array task runs the same `heartjobs run` as everywhere else, into the same
versioned artifact folders.

A submission is a numbered folder, submissions/vNNNN: submission.json (what went where), specs/ (a
snapshot of each job file, so that editing jobs/ later can't change a queued task), and logs/
(submitit's pickles and each task's log, named by job id). A task is a submitit Checkpointable: on the
signal Slurm sends before a time limit (USR2, --signal-delay seconds ahead) it stops its `heartjobs run`,
which writes a checkpoint at the exact batch, and submitit requeues the task, which then resumes from
that checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import submitit
from submitit.core.utils import JobPaths, pickle_load
from submitit.slurm.slurm import SlurmInfoWatcher

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.records import Record
from heartjobs.store.rundir import (
    LATEST,
    RunDir,
    claim_version,
    finished_version,
    newest_unfinished,
    point_latest,
    version_number,
    versions,
)
from heartjobs.store.status import RUN_DEAD_AFTER_S, now_iso, progress_text, seconds_since
from heartjobs.system import launching, liveness, locks, stopping

SUBMISSION = "submission.json"
DEFAULT_TIME = {"slurm": "24:00:00", "local": "30-00:00:00"}
RUNNING_POLL_S = 10.0  # how often a task waiting for a run alive elsewhere looks again
STOP_MARGIN_S = 30  # of --signal-delay, left for submitit's requeue after the run has stopped
# How much earlier than --signal-delay says the limit's signal may come: up to 60 s by Slurm's sbatch
# documentation, and slurmctld looks at time limits only every ~30 s (seen here: 67-90 s before the end of
# a 2-minute slot with --signal-delay 60)
SIGNAL_EARLY_S = 90
JUST_SUBMITTED_S = 60  # a task of a submission this young that Slurm doesn't list yet counts as pending
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING"}
ACTIVE_STATES |= {"RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "UNKNOWN"}


@dataclass(frozen=True)
class SubmitOptions:
    """How to submit: the executor and, for Slurm, the sbatch options (see `heartjobs submit --help`)."""

    executor: str = "slurm"
    partition: str | None = None
    gpus_per_job: int | None = None  # None: see resolve_gpus
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    time: str | None = None  # Slurm's format; default DEFAULT_TIME[executor]
    array_parallelism: int | None = None  # Slurm: all at once; local: 1 (one job per device)
    container: Path | None = None
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()
    signal_delay_s: int = 120
    max_timeouts: int = 10
    force: bool = False
    extra: dict = field(default_factory=dict)  # further sbatch options, e.g. {"constraint": "a100"}

    @property
    def minutes(self) -> float:
        return parse_time(self.time or DEFAULT_TIME[self.executor])


def parse_time(text: str) -> float:
    """Slurm's time formats (MINUTES, MINUTES:SECONDS, H:M:S, D-H, D-H:M, D-H:M:S) in minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise HeartjobsError(f"--time: {text!r} is not a Slurm time (MINUTES, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:
        minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + int(c or 0) / 60
    elif c is not None:
        minutes = int(a) * 60 + int(b) + int(c) / 60
    else:
        minutes = int(a) + int(b or 0) / 60
    if minutes <= 0:
        raise HeartjobsError(f"--time: {text!r} must be longer than zero")
    return minutes


# --- the array task ---


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
        from heartjobs.spec.schema import load_spec

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


# --- submitting ---


def container_python(image: Path, cwd: Path, binds: list[Path]) -> str:
    """The python command of the array tasks inside the Apptainer image: the GPUs (--nv), and the
    project folder and every folder the tasks read or write (binds) at the same paths."""
    bind = ",".join(str(p) for p in binds)
    return shlex.join(["apptainer", "exec", "--nv", "--bind", bind, "--pwd", str(cwd), str(image), "python"])


def bind_paths(cwd: Path, folders: list[Path]) -> list[Path]:
    """cwd and the folders outside it (resolved), with none inside another."""
    chosen: list[Path] = []
    for folder in sorted({cwd.resolve(), *(f.resolve() for f in folders)}, key=lambda p: (len(p.parts), str(p))):
        if not any(folder.is_relative_to(c) for c in chosen):
            chosen.append(folder)
    return chosen


def check_available(options: SubmitOptions) -> None:
    """Fail early, before anything is written, when the chosen executor can't run here."""
    if options.executor == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise HeartjobsError(
                f"--executor slurm: {' and '.join(missing)} not found on PATH; submit from a Slurm login node "
                "(or use --executor local)"
            )
    if options.container and not options.container.is_file():
        raise HeartjobsError(f"--container: {options.container}: no such image file (build it with: make sif)")
    if options.signal_delay_s >= options.minutes * 60:
        raise HeartjobsError(
            f"--signal-delay: {options.signal_delay_s} s is not shorter than the time limit "
            f"({options.minutes:g} min); the task would be told to stop as it starts"
        )


def resolve_gpus(options: SubmitOptions, specs: list[tuple[Path, object]]) -> tuple[SubmitOptions, str | None]:
    """--gpus-per-job when not given: none for jobs that all run on the CPU, none on a Slurm cluster whose
    nodes (in the partition) list no GPU as a generic resource (sbatch would refuse --gres=gpu), else one.
    Returns the options with the number filled in, and a note saying why when it is none."""
    if options.gpus_per_job is not None:
        return options, None
    if all(spec.train.device == "cpu" for _, spec in specs):
        return dataclasses.replace(options, gpus_per_job=0), None
    if options.executor == "slurm":
        command = ["sinfo", "-h", "-o", "%G", *(["-p", options.partition] if options.partition else [])]
        try:
            listed = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            listed = None
        if listed is not None and listed.returncode == 0 and "gpu" not in listed.stdout:
            where = f"partition {options.partition}" if options.partition else "this cluster"
            note = f"{where} lists no GPU (GRES) on its nodes: the tasks run on CPUs (--gpus-per-job N asks anyway)"
            return dataclasses.replace(options, gpus_per_job=0), note
    return dataclasses.replace(options, gpus_per_job=1), None


def make_executor(
    options: SubmitOptions, folder: Path, count: int, cwd: Path, binds: list[Path]
) -> submitit.core.core.Executor:
    check_available(options)
    python = container_python(options.container, cwd, binds) if options.container else None
    if options.executor == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=options.max_timeouts, python=python)
        executor.update_parameters(
            timeout_min=options.minutes, gpus_per_node=options.gpus_per_job, signal_delay_s=options.signal_delay_s
        )
        if options.setup:
            executor.update_parameters(setup=list(options.setup))
        return executor
    executor = submitit.SlurmExecutor(folder, max_num_timeout=options.max_timeouts, python=python)
    parameters = {
        "job_name": "heartjobs",
        "time": math.ceil(options.minutes),
        "signal_delay_s": options.signal_delay_s,
        "partition": options.partition,
        "gres": f"gpu:{options.gpus_per_job}" if options.gpus_per_job else None,
        "cpus_per_task": options.cpus_per_task,
        "mem": f"{options.mem_gb}GB" if options.mem_gb else None,
        "account": options.account,
        "qos": options.qos,
        "setup": list(options.setup) or None,
        "array_parallelism": options.array_parallelism or count,
        "additional_parameters": {"requeue": True, **options.extra},  # scontrol requeue needs it
    }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor


@dataclass
class Plan:
    """What a submission will do with each spec."""

    submit: list[tuple[Path, object]] = field(default_factory=list)  # (path, ResolvedSpec)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan(specs: list[tuple[Path, object]], root: Path, force: bool = False) -> Plan:
    """Leave out what is finished (unless force), running, or waiting in an earlier submission under
    `root`, so that submitting the same files again runs only what is missing."""
    result = Plan()
    queued = queued_elsewhere(root, {spec.spec_hash for _, spec in specs}, result.notes)
    first: dict[str, Path] = {}
    roots: dict[Path, tuple[str, Path]] = {}
    for path, spec in specs:
        if spec.spec_hash in first:  # two tasks of one configuration would race for its version
            result.skipped.append({"spec": str(path), "reason": f"the same configuration as {first[spec.spec_hash]}"})
            continue
        other_hash, other = roots.get(spec.run_root.resolve(), (spec.spec_hash, path))
        if other_hash != spec.spec_hash:  # resuming takes a job's newest unfinished version: one config a name
            reason = f"the job name {spec.name!r} is {other}'s too, with another configuration; rename one"
            result.skipped.append({"spec": str(path), "reason": reason})
            continue
        first[spec.spec_hash] = path
        roots[spec.run_root.resolve()] = (spec.spec_hash, path)
        if not force and (done := finished_version(spec)) is not None:
            result.skipped.append({"spec": str(path), "reason": f"already finished in {done} (--force reruns it)"})
        elif (busy := running_elsewhere(spec)) is not None:
            result.skipped.append({"spec": str(path), "reason": f"running now in {busy}"})
        elif spec.spec_hash in queued:
            result.skipped.append({"spec": str(path), "reason": queued[spec.spec_hash]})
        else:
            result.submit.append((path, spec))
    return result


def queued_elsewhere(root: Path, hashes: set[str], notes: list[str]) -> dict[str, str]:
    """Configurations (spec hashes) that a task of an earlier submission still holds (pending, running,
    requeued), each with a note saying where; a submission whose states can't be read adds to notes."""
    held: dict[str, str] = {}
    for folder in versions(root):
        record = Submission.read(folder / SUBMISSION)
        tasks = [t for t in record.tasks if t.get("spec_hash") in hashes] if record else []
        if not tasks or (record.executor == "local" and record.host != socket.gethostname()):
            continue
        try:
            states = scheduler_states({**record.data(), "tasks": tasks})
        except HeartjobsError as exc:  # can't tell: better not submitted now than trained twice
            for task in tasks:
                held[task["spec_hash"]] = f"task {task['job_id']} in {folder} can't be checked now ({exc}); try again"
            continue
        for task in tasks:
            state = states[task["job_id"]]
            if state == "UNKNOWN":  # e.g. accounting purged: can't tell, so don't block the job forever
                notes.append(f"{folder}: task {task['job_id']} ({task['job']}): state unknown; not counted")
            elif not finished(state):
                held[task["spec_hash"]] = f"waiting or running in {folder} (task {task['job_id']}: {state})"
    return held


@contextlib.contextmanager
def _stdio_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr at a file while local controllers start, so that they
    neither write into the terminal nor hold a caller's pipe open after `heartjobs submit` exits."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def submit(specs: list[tuple[Path, object]], options: SubmitOptions, root: Path) -> tuple[dict, list]:
    """Submit the specs as one array; returns the submission record and submitit's job objects."""
    cwd = Path.cwd()
    folder = _submission_folder(specs, root)
    logs = folder / "logs"
    binds = bind_paths(cwd, [root, *(Path(s.data.prepared) for _, s in specs), *(s.output.root for _, s in specs)])
    executor = make_executor(options, logs, len(specs), cwd, binds)
    tasks, rows = _tasks(specs, options, folder, cwd)
    options_record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    record = {
        "executor": options.executor,
        "created": now_iso(),
        "host": socket.gethostname(),
        "cwd": str(cwd),
        "options": options_record,
        "tasks": rows,
    }
    try:
        if options.executor == "local":
            logs.mkdir(parents=True, exist_ok=True)
            with _stdio_to(logs / "controllers.log"):
                jobs = executor.submit_array(tasks)
        else:  # submitit prints sbatch's complaint itself; say it once, in the error below
            with contextlib.redirect_stderr(io.StringIO()):
                jobs = executor.submit_array(tasks)
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
        error = one_line(exc, 600)
        if isinstance(exc.__cause__, subprocess.CalledProcessError):  # sbatch exited non-zero: nothing was
            _forget_submission(folder, root)  # submitted, so no numbered folder stands for it
        else:  # e.g. sbatch timed out: a job may have gone in, so its folder and pickles stay, recorded
            Submission(**{**record, "tasks": [], "error": error}).write(folder / SUBMISSION)
            raise HeartjobsError(f"{folder}: sbatch failed, and a job may have been submitted: {error}") from None
        if "generic resource" in error and options.gpus_per_job:
            error += "; this cluster has no GPUs as a generic resource (GRES) here: pass --gpus-per-job 0"
        raise HeartjobsError(f"sbatch refused the submission, nothing was submitted: {error}") from None
    for row, job in zip(rows, jobs, strict=True):
        row.update(job_id=job.job_id, stdout=str(job.paths.stdout), stderr=str(job.paths.stderr))
        if options.executor == "local":  # tells the controller from a later process given its pid
            row["pid_started"] = liveness.process_start_ticks(int(job.job_id))
    Submission(**record).write(folder / SUBMISSION)
    return {**record, "folder": str(folder)}, jobs


@contextlib.contextmanager
def submitting(root: Path, wait_s: float = 120.0) -> Iterator[None]:
    """Hold the submissions folder for one `heartjobs submit` from reading what is held to recording what it
    submitted, so that two submissions at once can't both decide a job is free and train it twice."""
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeartjobsError(f"--folder {root}: cannot make a submission folder there ({exc.strerror})") from None
    with locks.exclusive(
        Path(root) / ".submit.lock", f"{root}: another heartjobs submit is still submitting there; try again", wait_s
    ):
        yield


def _forget_submission(folder: Path, root: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    remaining = versions(root)
    if remaining:
        point_latest(root, remaining[-1])
    else:
        with contextlib.suppress(FileNotFoundError):
            (root / LATEST).unlink()


def _submission_folder(specs: list[tuple[Path, object]], root: Path) -> Path:
    """The output roots (bound into a container, so they must exist), then a new submissions/vNNNN."""
    for path, spec in specs:
        try:
            spec.output.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HeartjobsError(f"{path}: output.root: cannot make {spec.output.root} ({exc.strerror})") from None
    try:
        return claim_version(root)
    except OSError as exc:
        raise HeartjobsError(f"--folder {root}: cannot make a submission folder there ({exc.strerror})") from None


def _tasks(
    specs: list[tuple[Path, object]], options: SubmitOptions, folder: Path, cwd: Path
) -> tuple[list[SpecTask], list[dict]]:
    """One SpecTask per spec, each on a snapshot of its file, and the task rows of submission.json."""
    parallel = options.array_parallelism or 1
    stop_wait_s = options.signal_delay_s - min(STOP_MARGIN_S, options.signal_delay_s / 2)
    tasks, rows = [], []
    for index, (path, spec) in enumerate(specs):
        snapshot = folder / "specs" / f"{index:03d}_{Path(path).name}"
        atomic.write_bytes(snapshot, Path(path).read_bytes())
        existing = versions(spec.run_root)
        after = version_number(existing[-1]) if options.force and existing else 0
        lock = (index % parallel, parallel) if options.executor == "local" else None
        limit_s = (math.ceil(options.minutes) if options.executor == "slurm" else options.minutes) * 60
        tasks.append(
            SpecTask(str(snapshot.resolve()), str(cwd), after, lock, stop_wait_s, limit_s, options.signal_delay_s)
        )
        rows.append(
            {
                "index": index,
                "job": spec.name,
                "spec": str(path),
                "snapshot": str(snapshot),
                "spec_hash": spec.spec_hash,
                "run_root": str(spec.run_root.absolute()),
                "after": after,
            }
        )
    return tasks, rows


# --- status ---


class Submission(Record):
    """submission.json of a submission folder: the executor, when and where it was submitted from, its
    options, and one row per task (its index, job, spec and snapshot, spec hash, run root, the version it
    must come after, the scheduler's job id, its logs, and with the local executor the controller's start
    time); `error` where sbatch failed and a job may have gone in anyway."""

    executor: str
    created: str | None = None
    host: str | None = None
    cwd: str | None = None
    options: dict = {}
    tasks: list[dict] = []
    error: str | None = None


def read_submission(path: Path) -> dict:
    """A submission's record; `path` is a submission folder or the root that holds them (its newest)."""
    folder = Path(path)
    if not (folder / SUBMISSION).exists() and (folder / LATEST).exists():
        folder = folder / LATEST
    record = Submission.read(folder / SUBMISSION)
    if record is None:
        raise HeartjobsError(f"{path}: no {SUBMISSION} here; not a submission folder (see submissions/)")
    if record.error:
        raise HeartjobsError(f"{folder}: this submission failed, nothing was submitted: {record.error}")
    return {**record.data(), "folder": str(folder.resolve())}


def scheduler_states(record: dict) -> dict[str, str]:
    """Each task's state by job id: from Slurm (see _slurm_states); from the controller process and
    submitit's result file with the local executor."""
    if record["executor"] == "local":
        return _local_states(record)
    return _slurm_states(record)


def _local_states(record: dict) -> dict[str, str]:
    """A local task runs while its controller process lives (it exits only after writing the result
    file); then the result file says how it ended. Another host's controllers can't be seen."""
    here = record.get("host") == socket.gethostname()
    states = {}
    for task in record["tasks"]:
        controller = {"pid": task["job_id"], "host": record.get("host"), "pid_started": task.get("pid_started")}
        if not here:
            state = "UNKNOWN"
        elif liveness.process_alive(controller):
            state = "RUNNING"
        else:
            state = _result_state(task) or "INTERRUPTED"
        states[task["job_id"]] = state
    return states


def _result_state(task: dict) -> str | None:
    """COMPLETED or FAILED from the result file submitit writes when a task ends (none when a task was
    stopped from outside: a requeue, a preemption, scancel)."""
    result = JobPaths(Path(task["stdout"]).parent, task["job_id"], 0).result_pickle
    if not result.exists():
        return None
    return "COMPLETED" if pickle_load(result)[0] == "success" else "FAILED"


def _slurm_states(record: dict) -> dict[str, str]:
    """Each task's Slurm state. Live tasks from squeue (slurmctld's own view, which knows a job the moment
    sbatch returns); ended ones from `scontrol show job` while slurmctld still holds them (MinJobAge),
    then sacct when accounting is on, then the task's own files: submitit's result file, its run folder.
    Clusters without accounting storage (many small ones) have no sacct; nothing here needs it."""
    tasks = record["tasks"]
    arrays = sorted({task["job_id"].split("_")[0] for task in tasks})
    states = _squeue_states(arrays)
    missing = [t for t in tasks if t["job_id"] not in states]
    if missing:
        states |= _scontrol_states(sorted({t["job_id"].split("_")[0] for t in missing}))
        missing = [t for t in tasks if t["job_id"] not in states]
    if missing:
        states |= _sacct_states(sorted({t["job_id"].split("_")[0] for t in missing}))
    age = seconds_since(record.get("created"))
    young = age is not None and age < JUST_SUBMITTED_S
    for task in tasks:
        if task["job_id"] not in states:
            state = _result_state(task) or ("COMPLETED" if _finished_run(task) else None)
            # not listed by Slurm and no trace of an end: either it is too new to be listed, or it ended
            # long ago without a result (cancelled, killed): ENDED, how is no longer known
            states[task["job_id"]] = state or ("PENDING" if young else "ENDED")
    return {task["job_id"]: states[task["job_id"]] for task in tasks}


def _slurm_command(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HeartjobsError(f"{command[0]} failed, so Slurm states are unknown: {one_line(exc, 200)}") from None


def _squeue_states(arrays: list[str]) -> dict[str, str]:
    """The live tasks (pending, running, requeued, completing) of these jobs, one per array task (-r)."""
    result = _slurm_command(["squeue", "-h", "-a", "-r", "-o", "%i|%T", "-j", ",".join(arrays)])
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:  # squeue's answer when none of the jobs is known any more
            return {}
        message = one_line(result.stderr.strip() or f"exit code {result.returncode}", 300)
        raise HeartjobsError(f"squeue failed, so Slurm states are unknown: {message}")
    states = {}
    for line in result.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            states[job_id] = state
    return states


def _scontrol_states(arrays: list[str]) -> dict[str, str]:
    """Tasks slurmctld still holds after they ended (MinJobAge, 300 s by default), with how they ended."""
    states = {}
    for array in arrays:
        result = _slurm_command(["scontrol", "-a", "-o", "show", "job", array])
        if result.returncode != 0:  # purged already, or never known
            continue
        for line in result.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if "JobState" not in fields:
                continue
            array_id, task_id = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
            job_id = f"{array_id}_{task_id}" if array_id and task_id and task_id.isdigit() else fields.get("JobId")
            states[job_id] = fields["JobState"]
    return states


def _sacct_states(arrays: list[str]) -> dict[str, str]:
    """Ended tasks from Slurm's accounting, where it is on (sacct fails without accounting storage)."""
    command = ["sacct", "-o", "JobID,State", "--parsable2", *[a for j in arrays for a in ("-j", j)]]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    if result.returncode != 0:
        return {}
    info = SlurmInfoWatcher().read_info(result.stdout)
    return {job_id: fields["State"] for job_id, fields in info.items() if fields.get("State")}


def _finished_run(task: dict) -> bool:
    """Whether the task's job has a finished version made by this submission."""
    return any(RunDir(folder).status().state == "done" for folder in _task_runs(task))


def _task_runs(task: dict) -> list[Path]:
    """The versions of the task's configuration made by this submission (numbered above `after`)."""
    return [
        v
        for v in versions(Path(task["run_root"]))
        if version_number(v) > task.get("after", 0) and RunDir(v).spec_hash() == task["spec_hash"]
    ]


def status(record: dict) -> list[dict]:
    """One row per task: the scheduler's state, its run's state and progress, and where its log is."""
    states = scheduler_states(record)
    rows = []
    for task in record["tasks"]:
        row = {"index": task["index"], "job": task["job"], "job_id": task["job_id"], "state": states[task["job_id"]]}
        runs = _task_runs(task)
        if runs:
            run = RunDir(runs[-1]).status()
            row["run"] = f"{runs[-1]} {run.state or '?'} {progress_text(run)}"
            if run.resumed:
                row["run"] += f" (resumed {run.resumed}x)"
        else:
            row["run"] = "-"
        row["log"] = task["stdout"]
        rows.append(row)
    return rows


def finished(state: str) -> bool:
    return state.split()[0] not in ACTIVE_STATES


def wait(record: dict, jobs: list, on_change: Callable[[dict], None], poll_s: float | None = None) -> list[dict]:
    """Poll until every task has ended, calling on_change for each state change; returns the last rows."""
    poll_s = poll_s or (1.0 if record["executor"] == "local" else 10.0)  # squeue is cheap for slurmctld
    seen: dict[int, str] = {}
    while True:
        if record["executor"] == "local":
            for job in jobs:  # polls (reaps) each controller that has exited, so its pid reads as gone
                job.state  # noqa: B018
        rows = status(record)
        for row in rows:
            if seen.get(row["index"]) != row["state"]:
                seen[row["index"]] = row["state"]
                on_change(row)
        if all(finished(row["state"]) for row in rows):
            return rows
        time.sleep(poll_s)
