"""Scheduler states of a submission's tasks: from Slurm (squeue, scontrol, sacct, the tasks' own files) or
from the local executor's controller processes; each task's row (state, run, log) and waiting until all
have ended."""

from __future__ import annotations

import pickletools
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from submitit.core.utils import JobPaths
from submitit.slurm.slurm import SlurmInfoWatcher

from heartjobs.errors import HeartjobsError, one_line
from heartjobs.store.rundir import RunDir, version_number, versions
from heartjobs.store.status import progress_text, seconds_since
from heartjobs.system import liveness

JUST_SUBMITTED_S = 60  # a task of a submission this young that Slurm doesn't list yet counts as pending
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING"}
ACTIVE_STATES |= {"RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "UNKNOWN"}


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
    stopped from outside: a requeue, a preemption, scancel), read as data, never unpickled: a submissions
    folder may come from elsewhere, and unpickling runs whatever code its pickles name (see _result_tag)."""
    result = JobPaths(Path(task["stdout"]).parent, task["job_id"], 0).result_pickle
    tag = _result_tag(result)
    return None if tag is None else "COMPLETED" if tag == "success" else "FAILED"


RESULT_HEAD_BYTES = 64  # submitit's tag is the pickle's first string, within its first 20 bytes


def _result_tag(path: Path) -> str | None:
    """The tag of submitit's result pickle, ("success", result) or ("error", traceback): its first value,
    which must be a string after nothing but the protocol and frame opcodes. pickletools only lists the
    opcodes of the file's first bytes; it imports and calls nothing. None for a file that is not such a
    pickle, or not a regular file (a FIFO would hang, a device never end)."""
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as file:
            head = file.read(RESULT_HEAD_BYTES)
        for opcode, value, _ in pickletools.genops(head):
            if opcode.name not in ("PROTO", "FRAME"):
                return value if isinstance(value, str) and value in ("success", "error") else None
    except (OSError, ValueError):  # unreadable; truncated or not a pickle at all
        return None
    return None


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
