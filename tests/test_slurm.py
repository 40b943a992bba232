"""`heartjobs submit` against a real single-node Slurm (slurmctld, slurmd and munged started by
scripts/slurm-ci.sh, without accounting storage, as many small clusters run): arrays to the end with
--wait and --status, `scontrol requeue` and a time limit's USR2 mid-run, a stop during evaluation,
resubmission while a job is running, requeued, pending or finished, two submits at once, and the
refusals. `heartjobs submit` runs in this process (`cli`) but where two submits race; the tasks are real
Slurm jobs. Run by `make slurm-test` (and CI), which starts the cluster first; `make test` leaves these out."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from submitit.core.utils import JobPaths, pickle_load

from heartjobs.store.rundir import RunDir, versions

from .conftest import assert_same_run, cli, losses, wait_for, write_spec

pytestmark = pytest.mark.slurm

QUICK = {"epochs": 2, "batch_size": 4, "device": "cpu"}
# DCGAN, many small batches, for about 90 s of training on one idle thread of this machine: its epochs
# are set by a short probe run (_long_for_this_machine). A 2-minute slot's USR2 (--signal-delay 60) comes
# 30-55 s into the slot, so the slot after the requeue ends by the limit's stop while the run still has
# about twice that much work left, on a fast machine as on a slow one. (A fixed count was too little work
# once epochs took 0.1 s instead of 0.4-0.75 s: the run then finished in that slot before the USR2 came.)
LONG = {"epochs": 300, "batch_size": 2, "sample_every": 150, "checkpoint_every": 10, "device": "cpu"}
LONG_WORK_S = 90
SHORT_SLOT = ("--time", "2", "--signal-delay", "60")
NO_OMP = {"OMP_NUM_THREADS": None}


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    """The running cluster that `make slurm-test` started; without one these tests fail, saying so."""
    if shutil.which("sinfo") is None or "SLURM_CONF" not in os.environ:
        pytest.fail("no Slurm cluster here: run these with `make slurm-test` (scripts/slurm-ci.sh starts one)")
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    assert state.returncode == 0 and state.stdout.split() == ["idle"], (state.stdout, state.stderr)
    sacct = subprocess.run(["sacct", "-n"], capture_output=True, text=True, timeout=60)
    assert sacct.returncode != 0, "this suite is for a cluster without accounting storage"


def _submission(folder: Path) -> dict:
    return json.loads((folder / "latest" / "submission.json").read_text())


def _squeue_state(job_id: str) -> str | None:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", job_id.split("_")[0]], capture_output=True)
    rows = dict(line.split("|") for line in out.stdout.decode().split())
    return rows.get(job_id)


def _task_log(task: dict) -> str:
    return Path(task["stdout"]).read_text() + Path(task["stderr"]).read_text()


def _scontrol(*args: str) -> None:
    result = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_an_array_runs_to_done_with_wait_and_status_without_accounting(tmp_path, prepared32):
    specs = [write_spec(tmp_path, name, name.split("_")[0], prepared32, **QUICK) for name in ("gan_a", "wgan_a")]
    folder = tmp_path / "submissions"
    # without the suite's OMP_NUM_THREADS=1 (sbatch exports the environment): the tasks' one thread each
    # must come from the CPUs Slurm gave them
    result = cli("submit", *specs, "--time", "10", "--folder", folder, "--wait", cwd=tmp_path, env=NO_OMP)
    assert result.returncode == 0, result.stderr
    assert f"submitted 2 tasks as a Slurm job array ({folder / 'v0001'})" in result.stdout
    record = _submission(folder)
    assert record["options"]["gpus_per_job"] == 0  # CPU jobs ask for no GPU
    for task in record["tasks"]:
        assert f"{task['job_id']}: COMPLETED" in result.stdout
        runs = tmp_path / "artifacts" / task["job"]
        assert versions(runs) == [runs / "v0001"] and RunDir(runs / "v0001").status().state == "done"
        env = json.loads((runs / "v0001" / "env.json").read_text())
        # one CPU each (Slurm's default): one torch thread each, not one per core of the node
        assert env["cpus_allotted"] == "1 (SLURM_CPUS_ON_NODE)" and env["torch_threads"] == 1
        assert pickle_load(JobPaths(Path(task["stdout"]).parent, task["job_id"], 0).result_pickle)[0] == "success"

    status = cli("submit", "--status", "--folder", folder)
    assert status.returncode == 0, status.stderr
    rows = [line.split("\t") for line in status.stdout.strip().splitlines()[1:]]
    assert [(row[1], row[3]) for row in rows] == [("gan_a", "COMPLETED"), ("wgan_a", "COMPLETED")]

    again = cli("submit", *specs, "--folder", folder, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("already finished in") == 2, again.stdout
    assert versions(folder) == [folder / "v0001"]


def _long_for_this_machine(folder: Path, prepared: Path) -> dict:
    """LONG with the epochs that take about LONG_WORK_S on one thread here, from the median epoch of a short
    run of the same job (never fewer than LONG's own 300)."""
    from heartjobs.runner.lifecycle import run_job

    folder.mkdir()
    probe = run_job(write_spec(folder, "probe", "dcgan", prepared, **{**LONG, "epochs": 15}))
    seconds = sorted(e["seconds"] for e in losses(probe))[len(losses(probe)) // 2]
    epochs = max(LONG["epochs"], math.ceil(LONG_WORK_S / seconds))
    print(f"LONG: {seconds:.3f} s an epoch here, so {epochs} epochs")
    return {**LONG, "epochs": epochs, "sample_every": epochs // 2, "checkpoint_every": max(1, epochs // 30)}


def test_requeue_time_limit_and_a_stop_during_evaluation_resume_and_never_train_twice(tmp_path, prepared32):
    """One array of two tasks in 2-minute slots. A (DCGAN) is requeued by `scontrol requeue` after two
    epochs and stopped by the limit's USR2 later: it resumes each time in the same version and ends bit
    for bit as an uninterrupted run. B is requeued once its evaluation has finished a repeat: it goes on
    with the next repeat. Submitting again while A runs, while it waits after its requeue, and after both
    finished submits nothing."""
    long = _long_for_this_machine(tmp_path / "probe", prepared32)
    a = write_spec(tmp_path, "long_a", "dcgan", prepared32, **long)
    evaluation = {"n_generated": 200, "repeats": 3, "dims": 64, "batch_size": 50, "weights": "untrained"}
    evaluation |= {"kid_subsets": 5, "kid_subset_size": 50, "frd": True, "frd_n": 60}
    b = write_spec(tmp_path, "eval_b", "gan", prepared32, eval=evaluation, **QUICK)
    reference_folder = tmp_path / "reference"
    reference_folder.mkdir()
    reference_spec = write_spec(reference_folder, "long_a", "dcgan", prepared32, **long)
    # the uninterrupted run, on one thread as the tasks are (another thread count may round differently;
    # tests/conftest.py sets OMP_NUM_THREADS=1 for every child)
    # its output into a file: a pipe nobody reads while the test waits fills up (a line an epoch, ~1000 epochs)
    # and blocks the run
    reference_log = reference_folder / "run.log"
    with open(reference_log, "wb") as log:
        reference = subprocess.Popen(
            [sys.executable, "-m", "heartjobs", "run", str(reference_spec)], stdout=log, stderr=subprocess.STDOUT
        )
    folder = tmp_path / "submissions"
    result = cli("submit", a, b, *SHORT_SLOT, "--folder", folder, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    task_a, task_b = _submission(folder)["tasks"]
    run_a, run_b = (tmp_path / "artifacts" / name / "v0001" for name in ("long_a", "eval_b"))

    wait_for(lambda: (run_a / "losses.jsonl").exists() and len(losses(run_a)) >= 2, timeout=300)
    running = cli("submit", a, *SHORT_SLOT, "--folder", folder, cwd=tmp_path)
    assert f"skipped {a}: running now in {run_a}" in running.stdout and "nothing to submit" in running.stdout
    _scontrol("requeue", task_a["job_id"])
    # requeued by Slurm, its run perhaps still writing its checkpoint: nothing is submitted either way
    wait_for(lambda: _squeue_state(task_a["job_id"]) not in ("RUNNING", None), timeout=60)
    stopping = cli("submit", a, *SHORT_SLOT, "--folder", folder, cwd=tmp_path)
    assert f"skipped {a}: " in stopping.stdout and "nothing to submit" in stopping.stdout, stopping.stdout
    # its run stopped (checkpointed, interrupted): the submission's waiting task holds it
    wait_for(lambda: RunDir(run_a).status().state == "interrupted", timeout=60)
    held = cli("submit", a, *SHORT_SLOT, "--folder", folder, cwd=tmp_path)
    assert f"skipped {a}: waiting or running in" in held.stdout and "nothing to submit" in held.stdout, held.stdout

    def first_repeat_kept() -> bool:
        logs = list(run_b.glob("eval_progress_*.json"))
        return bool(logs) and "frd" in json.loads(logs[0].read_text())["repeats"].get("0", {})

    wait_for(first_repeat_kept, timeout=300)
    # (its own time limit may have requeued it a moment before: then that stop is the one under test)
    subprocess.run(["scontrol", "requeue", task_b["job_id"]], capture_output=True, timeout=60)

    for run in (run_a, run_b):
        wait_for(lambda run=run: RunDir(run).status().state == "done", timeout=900)
    assert reference.wait(timeout=600) == 0, reference_log.read_text()[-2000:]

    log_a, log_b = _task_log(task_a), _task_log(task_b)
    limits = log_a.count("limit left (squeue): the time limit")  # the limit's USR2, by Slurm's clock
    assert limits >= 1, f"A was never stopped by its time limit (too little work for this machine):\n{log_a}"
    assert RunDir(run_a).status().resumed >= 2 and versions(run_a.parent) == [run_a]
    assert "stopped by signal 15 after a checkpoint" in log_a  # the requeue: one line, and on
    # each counted as a timeout, the requeue by scontrol not: 10 allowed, one fewer left after each
    assert f"({10 - limits} remaining timeouts)" in log_a
    assert f"({10 - limits - 1} remaining timeouts)" not in log_a
    assert "Traceback" not in log_a and "triggered an exception" not in log_a
    assert_same_run(run_a, reference_folder / "artifacts" / "long_a" / "v0001")

    assert "measured before this process, kept" in log_b and "Traceback" not in log_b
    assert (run_b / "fid.json").is_file() and not list(run_b.glob("eval_progress_*.json"))
    assert len(json.loads((run_b / "fid.json").read_text())["repeats"]) == 3
    assert RunDir(run_b).status().resumed >= 1 and versions(run_b.parent) == [run_b]

    for task in (task_a, task_b):  # the task ends a moment after its run wrote "done"
        wait_for(lambda task=task: _squeue_state(task["job_id"]) is None, timeout=120)
    status = cli("submit", "--status", "--folder", folder)
    assert status.returncode == 0 and status.stdout.count("\tCOMPLETED\t") == 2, status.stdout
    after = cli("submit", a, b, *SHORT_SLOT, "--folder", folder, cwd=tmp_path)
    assert after.stdout.count("already finished in") == 2 and versions(folder) == [folder / "v0001"]


def test_two_submits_at_once_and_a_pending_job_train_once(tmp_path, prepared32):
    spec = write_spec(tmp_path, "once", "gan", prepared32, **QUICK)
    folder = tmp_path / "submissions"
    # held from the start (pending, reason JobHeldUser), so both submits see it before it can finish
    command = [sys.executable, "-m", "heartjobs", "submit", str(spec), "--folder", str(folder), "--sbatch", "hold"]
    both = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    both.append(subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=300) for proc in both]
    assert [proc.returncode for proc in both] == [0, 0], outputs
    submitted = [out for out, _ in outputs if "submitted 1 task as a Slurm job" in out]
    skipped = [out for out, _ in outputs if "(task " in out and ": PENDING)" in out]
    assert len(submitted) == 1 and len(skipped) == 1, outputs
    assert versions(folder) == [folder / "v0001"]

    (task,) = _submission(folder)["tasks"]
    assert "_" not in task["job_id"]  # one file: a plain job, not an array
    pending = cli("submit", spec, "--folder", folder, cwd=tmp_path)
    assert f"(task {task['job_id']}: PENDING)" in pending.stdout and "nothing to submit" in pending.stdout
    _scontrol("release", task["job_id"])
    waited = cli("submit", "--status", "--folder", folder)
    assert waited.returncode == 0
    runs = tmp_path / "artifacts" / "once"
    wait_for(lambda: RunDir(runs / "v0001").status().state == "done", timeout=300)
    wait_for(lambda: _squeue_state(task["job_id"]) is None, timeout=60)
    assert versions(runs) == [runs / "v0001"]


def test_refusals_are_one_line_and_take_no_submission_number(tmp_path, prepared32):
    spec = write_spec(tmp_path, "job", "gan", prepared32, **QUICK)
    folder = tmp_path / "submissions"

    def refused(*args: str, env: dict | None = None) -> str:
        result = cli("submit", spec, *args, "--folder", folder, cwd=tmp_path, env=env)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        return result.stderr

    bad_partition = refused("--partition", "nope")
    assert "nothing was submitted: sbatch: error: invalid partition specified: nope" in bad_partition
    no_gres = refused("--gpus-per-job", "1")
    assert "Invalid generic resource" in no_gres and "pass --gpus-per-job 0" in no_gres
    no_sbatch = refused(env={"PATH": str(tmp_path / "empty")})
    assert "sbatch and srun not found on PATH" in no_sbatch
    # the controller down: the same cluster's configuration with a port nobody listens on
    down = tmp_path / "down.conf"
    down.write_text(Path(os.environ["SLURM_CONF"]).read_text() + "\nSlurmctldPort=1\n")
    controller_down = refused(env={"SLURM_CONF": str(down)})
    assert "nothing was submitted" in controller_down and "Unable to contact slurm controller" in controller_down
    assert versions(folder) == []

    result = cli("submit", spec, "--folder", folder, "--wait", cwd=tmp_path)  # a good one, to look at
    assert result.returncode == 0, result.stderr
    status = cli("submit", "--status", "--folder", folder, env={"SLURM_CONF": str(down)})
    assert status.returncode == 2 and status.stderr.startswith("error: squeue failed, so Slurm states are unknown: ")
    assert "Unable to contact slurm controller" in status.stderr and len(status.stderr.strip().splitlines()) == 1
