"""Fan job specs out as one submitit job array: on a Slurm cluster, or on this machine with submitit's
local executor. Each array task runs the same `heartjobs run` as everywhere else, into the same
versioned artifact folders.

A submission is a numbered folder, submissions/vNNNN: submission.json (what went where), specs/ (a
snapshot of each job file, so that editing jobs/ later can't change a queued task), and logs/
(submitit's pickles and each task's log, named by job id). A task is a submitit Checkpointable: on the
signal Slurm sends before a time limit or a preemption (USR2, --signal-delay seconds ahead) it stops its
`heartjobs run`, which writes a checkpoint at the exact batch, and submitit requeues the task, which
then resumes from that checkpoint.
"""

from __future__ import annotations

import contextlib
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
from datetime import datetime
from pathlib import Path

import submitit
from submitit.core.utils import JobPaths, pickle_load
from submitit.slurm.slurm import SlurmInfoWatcher

from heartjobs import artifacts, atomic, child
from heartjobs.errors import HeartjobsError

SUBMISSION = "submission.json"
EXECUTORS = ("slurm", "local")
DEFAULT_TIME = {"slurm": "24:00:00", "local": "30-00:00:00"}
RUNNING_ELSEWHERE_S = 300  # a run whose heartbeat is younger than this is running in another task
STOP_WAIT_S = 120  # how long a task gives its run to write the checkpoint once told to stop
STOPPED_GRACE_S = 60  # a run stopped from outside: how long the task waits for the requeue signal
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING"}
ACTIVE_STATES |= {"RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "UNKNOWN"}


@dataclass(frozen=True)
class SubmitOptions:
    """How to submit: the executor and, for Slurm, the sbatch options (see `heartjobs submit --help`)."""

    executor: str = "slurm"
    partition: str | None = None
    gpus_per_job: int = 1
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

    mode: "auto" (skip if finished, resume its unfinished version, else start one), "fresh" (a new
    version: --force), "resume" (after a requeue). lock: (k, n) to take device slot k of n, so that
    local tasks share the machine's device with each other and with queue workers; None on Slurm.
    """

    def __init__(self, spec_path: str, cwd: str, mode: str = "auto", lock: tuple[int, int] | None = None):
        self.spec_path, self.cwd, self.mode, self.lock = spec_path, cwd, mode, lock
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_process": None}

    def __call__(self) -> str:
        from heartjobs.spec import load_spec

        os.chdir(self.cwd)  # the specs' relative paths (data, artifacts) are the project folder's
        spec = load_spec(Path(self.spec_path))
        if self.mode == "auto" and (done := artifacts.finished_version(spec)) is not None:
            print(f"{spec.name}: already finished in {done}; nothing to do", flush=True)
            return str(done)
        resume = self.mode == "resume" or (self.mode == "auto" and resumable(spec) is not None)
        with self._device():
            self._process = child.start(Path(self.spec_path), resume=resume, cwd=self.cwd)
            # poll rather than wait(): the requeue signal's handler (checkpoint below) waits on it too
            while (code := self._process.poll()) is None:
                time.sleep(0.5)
        if code == 0:
            return str(artifacts.finished_version(spec))
        if child.stopped_by_signal(code):
            # Stopped from outside: Slurm signals every process of the step, so the requeue signal that
            # reaches this process next runs checkpoint() and requeues the task.
            time.sleep(STOPPED_GRACE_S)
            raise HeartjobsError(f"{self.spec_path}: stopped by signal {code - 128}; resubmit to resume it")
        raise HeartjobsError(f"{self.spec_path}: heartjobs run exited with code {code}; its error is above")

    @contextlib.contextmanager
    def _device(self) -> Iterator[None]:
        if self.lock is None:
            yield
            return
        from heartjobs.queue import default_slot, device_lock

        k, n = self.lock
        with device_lock(default_slot() + (f".{k}" if n > 1 else "")):
            yield

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on the requeue signal: stop the run (it checkpoints), requeue to resume."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):  # else the requeued run waits for it
                process.wait(timeout=STOP_WAIT_S)
        mode = "resume" if process is not None else self.mode
        return submitit.helpers.DelayedSubmission(SpecTask(self.spec_path, self.cwd, mode, self.lock))


def resumable(spec) -> Path | None:
    """The version `heartjobs run --resume` would continue, if it was made with this configuration."""
    run_dir = artifacts.newest_unfinished(spec.run_root)
    return run_dir if run_dir is not None and artifacts.spec_hash_of(run_dir) == spec.spec_hash else None


def running_elsewhere(spec) -> Path | None:
    """A version of this configuration whose run is alive (heartbeat within RUNNING_ELSEWHERE_S)."""
    run_dir = resumable(spec)
    if run_dir is None:
        return None
    status = artifacts.read_status(run_dir)
    if status.get("state") != "running":
        return None
    if status.get("host") == socket.gethostname():
        return run_dir if artifacts.process_alive(status) else None
    with contextlib.suppress(KeyError, ValueError):
        beat = datetime.fromisoformat(status["heartbeat"]).timestamp()
        return run_dir if time.time() - beat < RUNNING_ELSEWHERE_S else None
    return None


# --- submitting ---


def container_python(image: Path, cwd: Path) -> str:
    """The python command of the array tasks inside the Apptainer image, with the GPUs (--nv) and
    the project folder at the same path."""
    return shlex.join(["apptainer", "exec", "--nv", "--bind", str(cwd), "--pwd", str(cwd), str(image), "python"])


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
    options.minutes  # noqa: B018  (parses --time)


def make_executor(options: SubmitOptions, folder: Path, count: int, cwd: Path) -> submitit.core.core.Executor:
    check_available(options)
    python = container_python(options.container, cwd) if options.container else None
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


def plan(specs: list[tuple[Path, object]], force: bool = False) -> Plan:
    """Leave out what is finished or running elsewhere (unless force), so resubmitting runs what is missing."""
    result = Plan()
    first: dict[str, Path] = {}
    for path, spec in specs:
        if spec.spec_hash in first:  # two tasks of one configuration would race for its version
            result.skipped.append({"spec": str(path), "reason": f"the same configuration as {first[spec.spec_hash]}"})
            continue
        first[spec.spec_hash] = path
        if not force and (done := artifacts.finished_version(spec)) is not None:
            result.skipped.append({"spec": str(path), "reason": f"already finished in {done} (--force reruns it)"})
        elif (busy := running_elsewhere(spec)) is not None:
            result.skipped.append({"spec": str(path), "reason": f"running now in {busy}"})
        else:
            result.submit.append((path, spec))
    return result


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
    folder = artifacts.claim_version(root)
    logs = folder / "logs"
    executor = make_executor(options, logs, len(specs), cwd)
    parallel = options.array_parallelism or 1
    tasks, rows = [], []
    for index, (path, spec) in enumerate(specs):
        snapshot = folder / "specs" / f"{index:03d}_{Path(path).name}"
        atomic.write_bytes(snapshot, Path(path).read_bytes())
        lock = (index % parallel, parallel) if options.executor == "local" else None
        tasks.append(SpecTask(str(snapshot.resolve()), str(cwd), "fresh" if options.force else "auto", lock))
        run_root = spec.run_root if spec.run_root.is_absolute() else cwd / spec.run_root
        rows.append({"index": index, "job": spec.name, "spec": str(path), "snapshot": str(snapshot)})
        rows[-1].update(spec_hash=spec.spec_hash, run_root=str(run_root))
    options_record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    record = {
        "executor": options.executor,
        "created": artifacts.now_iso(),
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
        error = " ".join(str(exc).split())[:500]
        atomic.write_json(folder / SUBMISSION, {**record, "tasks": [], "error": error})
        raise HeartjobsError(f"{folder}: nothing was submitted: {error}") from None
    for row, job in zip(rows, jobs, strict=True):
        row.update(job_id=job.job_id, stdout=str(job.paths.stdout), stderr=str(job.paths.stderr))
    atomic.write_json(folder / SUBMISSION, record)
    return {**record, "folder": str(folder)}, jobs


# --- status ---


def read_submission(path: Path) -> dict:
    """A submission's record; `path` is a submission folder or the root that holds them (its newest)."""
    folder = Path(path)
    if not (folder / SUBMISSION).exists() and (folder / artifacts.LATEST).exists():
        folder = folder / artifacts.LATEST
    record = atomic.read_json(folder / SUBMISSION)
    if not record:
        raise HeartjobsError(f"{path}: no {SUBMISSION} here; not a submission folder (see submissions/)")
    if record.get("error"):
        raise HeartjobsError(f"{folder}: this submission failed, nothing was submitted: {record['error']}")
    return {**record, "folder": str(folder.resolve())}


def scheduler_states(record: dict) -> dict[str, str]:
    """Each task's state by job id: from sacct on Slurm; from the controller process and submitit's
    result file with the local executor."""
    tasks = record["tasks"]
    if record["executor"] == "local":
        states = {}
        for task in tasks:
            result = JobPaths(Path(task["stdout"]).parent, task["job_id"], 0).result_pickle
            if result.exists():
                outcome = pickle_load(result)[0]
                states[task["job_id"]] = "COMPLETED" if outcome == "success" else "FAILED"
            elif record.get("host") == socket.gethostname() and artifacts.pid_running(int(task["job_id"])):
                states[task["job_id"]] = "RUNNING"
            else:
                states[task["job_id"]] = "INTERRUPTED" if record.get("host") == socket.gethostname() else "UNKNOWN"
        return states
    arrays = sorted({task["job_id"].split("_")[0] for task in tasks})
    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2", *[a for j in arrays for a in ("-j", j)]]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise HeartjobsError(f"sacct failed, so Slurm states are unknown: {exc}") from None
    info = SlurmInfoWatcher().read_info(output)
    return {task["job_id"]: info.get(task["job_id"], {}).get("State") or "UNKNOWN" for task in tasks}


def status(record: dict) -> list[dict]:
    """One row per task: the scheduler's state, its run's state and progress, and where its log is."""
    states = scheduler_states(record)
    rows = []
    for task in record["tasks"]:
        row = {"index": task["index"], "job": task["job"], "job_id": task["job_id"], "state": states[task["job_id"]]}
        runs = [v for v in artifacts.versions(Path(task["run_root"])) if artifacts.spec_hash_of(v) == task["spec_hash"]]
        if runs:
            run = artifacts.read_status(runs[-1])
            progress = f"{run.get('epochs_done', 0)}/{run.get('epochs_total', '?')}"
            row["run"] = f"{runs[-1]} {run.get('state', '?')} {progress}"
            if run.get("resumed"):
                row["run"] += f" (resumed {run['resumed']}x)"
        else:
            row["run"] = "-"
        row["log"] = task["stdout"]
        rows.append(row)
    return rows


def finished(state: str) -> bool:
    return state.split()[0] not in ACTIVE_STATES


def wait(record: dict, jobs: list, on_change: Callable[[dict], None], poll_s: float | None = None) -> list[dict]:
    """Poll until every task has ended, calling on_change for each state change; returns the last rows."""
    poll_s = poll_s or (1.0 if record["executor"] == "local" else 30.0)
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
