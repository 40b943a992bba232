"""Fan job specs out as one submitit job array: on a Slurm cluster, or on this machine with submitit's
local executor. Each array task (heartjobs.cluster.task.SpecTask) runs the same `heartjobs run` as
everywhere else, into the same versioned artifact folders.

A submission is a numbered folder, submissions/vNNNN: submission.json (what went where), specs/ (a
snapshot of each job file, so that editing jobs/ later can't change a queued task), and logs/
(submitit's pickles and each task's log, named by job id). Planning leaves out what is finished, running
or still held by an earlier submission (its states: heartjobs.cluster.states).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import submitit

from heartjobs import atomic
from heartjobs.cluster.options import SubmitOptions
from heartjobs.cluster.states import finished, scheduler_states
from heartjobs.cluster.task import SpecTask, running_elsewhere  # SpecTask here too: pickles name this module
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.records import Record
from heartjobs.store.rundir import LATEST, claim_version, finished_version, point_latest, version_number, versions
from heartjobs.store.status import now_iso
from heartjobs.system import liveness, locks

SUBMISSION = "submission.json"
STOP_MARGIN_S = 30  # of --signal-delay, left for submitit's requeue after the run has stopped


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
    with atomic.open_for_append(path) as log:
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
