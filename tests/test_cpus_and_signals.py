"""The CPUs a job may use (Slurm's allocation, the cgroup quota, the affinity), and how an array task
tells the time limit's stop signal from a preemption: against fake /proc and /sys trees and a fake
squeue; tests/test_slurm.py does the same against a real Slurm."""

from __future__ import annotations

import os
import pickle
import signal
import stat
import sys
from pathlib import Path

import pytest

from heartjobs.cluster.options import SubmitOptions
from heartjobs.cluster.submit import queued_elsewhere, resolve_gpus
from heartjobs.cluster.task import SpecTask, time_left
from heartjobs.system import cpus, liveness


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_quota_is_the_tightest_from_the_own_cgroup_up(tmp_path):
    root = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/job/step\n",
            "sys/fs/cgroup/job/step/cpu.max": "max 100000\n",  # none on its own
            "sys/fs/cgroup/job/cpu.max": "150000 100000\n",  # 1.5 CPUs on its parent: 2 whole
            "sys/fs/cgroup/cpu.max": "400000 100000\n",
        },
    )
    assert cpus._cgroup_cpu_quota(root) == 2
    (root / "sys/fs/cgroup/job/cpu.max").write_text("max 100000\n")
    assert cpus._cgroup_cpu_quota(root) == 4
    (root / "sys/fs/cgroup/cpu.max").write_text("max 100000\n")
    assert cpus._cgroup_cpu_quota(root) is None


def test_cgroup_v1_quota_in_the_cpu_hierarchy(tmp_path):
    root = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpus._cgroup_cpu_quota(root) == 1


def test_allotted_cpus_take_the_fewest_and_torch_follows(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")
    assert cpus.allotted_cpus() == (1, "SLURM_CPUS_ON_NODE")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")  # more than this machine: the affinity decides
    assert cpus.allotted_cpus() == (len(os.sched_getaffinity(0)), "CPU affinity")
    code = "from heartjobs.system import cpus; import torch; cpus.use_allotted_cpus(); print(torch.get_num_threads())"
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    one = subprocess.run([sys.executable, "-c", code], env={**env, "SLURM_CPUS_ON_NODE": "1"}, capture_output=True)
    assert one.stdout.decode().strip() == "1", one.stderr
    told = subprocess.run([sys.executable, "-c", code], env={**env, "SLURM_CPUS_ON_NODE": "1", "OMP_NUM_THREADS": "2"},
                          capture_output=True)  # fmt: skip
    assert told.stdout.decode().strip() == "2"  # OMP_NUM_THREADS says otherwise: left alone


def _fake_squeue(folder: Path, monkeypatch, left: str) -> None:
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text(f"#!/bin/sh\necho '{left}'\n")
    (bin_dir / "squeue").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


class _SubmititHandler:
    """What submitit installs for USR2: a bound method of an object with has_timed_out and _start_time."""

    def __init__(self, started: float):
        self._start_time = started

    def has_timed_out(self) -> bool:  # submitit's rule, replaced by the task
        raise AssertionError("submitit's own rule was used")

    def checkpoint_and_try_requeue(self, signum, frame=None) -> None:
        pass


def test_a_stop_signal_counts_as_a_timeout_only_near_the_limit_by_slurms_own_clock(tmp_path, monkeypatch):
    import time

    handler = _SubmititHandler(started=time.time())  # this process just started...
    previous = signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
    try:
        task = SpecTask("job.toml", str(tmp_path), limit_s=3600, signal_delay_s=120)
        task._count_timeouts_by_the_limit()
        monkeypatch.setenv("SLURM_JOB_ID", "77")
        _fake_squeue(tmp_path, monkeypatch, "3:30")  # ...but Slurm says 210 s are left (a slow start-up)
        assert time_left(handler._start_time, 3600) == (210.0, "squeue")
        assert handler.has_timed_out() is True  # 210 <= 120 + 90: the limit's signal
        _fake_squeue(tmp_path, monkeypatch, "40:00")
        assert handler.has_timed_out() is False  # 40 minutes left: a preemption, not counted
        monkeypatch.delenv("SLURM_JOB_ID")  # the local executor: counted from this process's start
        left, source = time_left(handler._start_time, 3600)
        assert source == "since this task started" and 3590 < left <= 3600
        assert handler.has_timed_out() is False
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_task_pickled_by_an_older_heartjobs_still_starts(tmp_path):
    task = SpecTask("job.toml", str(tmp_path))
    del task.limit_s, task.signal_delay_s  # what an older version pickled
    restored = pickle.loads(pickle.dumps(task))
    assert restored.limit_s is None and restored.signal_delay_s == 120.0
    restored._count_timeouts_by_the_limit()  # no AttributeError: submitit's own rule stays


def test_gpus_per_job_default_follows_the_jobs_and_the_cluster(tmp_path, monkeypatch, prepared32):
    from heartjobs.spec.loading import load_spec

    from .conftest import write_spec

    cpu = load_spec(write_spec(tmp_path, "a", "gan", prepared32, device="cpu"))
    auto = load_spec(write_spec(tmp_path, "b", "gan", prepared32, device="auto"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sinfo = bin_dir / "sinfo"
    sinfo.write_text("#!/bin/sh\necho '(null)'\n")
    sinfo.chmod(stat.S_IRWXU)
    options = SubmitOptions(executor="slurm")
    assert resolve_gpus(options, [("a", cpu)]) == (SubmitOptions(executor="slurm", gpus_per_job=0), None)
    chosen, note = resolve_gpus(options, [("a", cpu), ("b", auto)])
    assert chosen.gpus_per_job == 0 and "lists no GPU (GRES)" in note
    sinfo.write_text("#!/bin/sh\necho 'gpu:4(S:0-1)'\n")
    assert resolve_gpus(options, [("b", auto)])[0].gpus_per_job == 1
    assert resolve_gpus(SubmitOptions(executor="slurm", gpus_per_job=2), [("b", auto)])[0].gpus_per_job == 2


def test_a_submission_whose_state_cant_be_read_holds_its_jobs(tmp_path, monkeypatch):
    from heartjobs import atomic
    from heartjobs.store.rundir import claim_version

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'squeue: error: Socket timed out' >&2\nexit 1\n")
    (bin_dir / "squeue").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "submissions"
    task = {"job_id": "5_0", "job": "a", "spec_hash": "h1", "stdout": str(tmp_path / "5_0_0_log.out")}
    atomic.write_json(claim_version(root) / "submission.json", {"executor": "slurm", "tasks": [task]})
    held = queued_elsewhere(root, {"h1"}, [])
    assert "can't be checked now" in held["h1"] and "Socket timed out" in held["h1"]  # not submitted twice


@pytest.mark.parametrize("text", ["1:30", "0:01:30"])
def test_time_left_reads_squeues_formats(tmp_path, monkeypatch, text):
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    _fake_squeue(tmp_path, monkeypatch, text)
    assert time_left(0.0, 600) == (90.0, "squeue")


def test_a_run_stops_when_the_process_that_started_it_dies(tmp_path, prepared32):
    # start_run's child sets its parent-death signal itself, after exec (no preexec_fn, which is unsafe
    # while a worker's heartbeat thread runs): SIGKILL the starter, and the run checkpoints and stops
    import json
    import subprocess

    from .conftest import SLOW_DCGAN, losses, wait_for, write_spec

    spec = write_spec(tmp_path, "orphan", "dcgan", prepared32, **SLOW_DCGAN)
    run_dir = tmp_path / "artifacts" / "orphan" / "v0001"
    starter_code = (
        "import subprocess, sys, time\nfrom pathlib import Path\nfrom heartjobs.system.launching import start_run\n"
        f"child = start_run(Path({str(spec)!r}), resume=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\ntime.sleep(600)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", starter_code], stdout=subprocess.PIPE, text=True)
    child = int(starter.stdout.readline())
    wait_for(lambda: (run_dir / "losses.jsonl").exists() and len(losses(run_dir)) >= 1, proc=starter)
    starter.kill()
    starter.wait()
    starter.stdout.close()
    wait_for(lambda: not liveness.pid_running(child), timeout=60)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["error"] == "stopped by SIGTERM"
    assert status["epochs_done"] < SLOW_DCGAN["epochs"]


def test_nothing_starts_a_child_with_a_preexec_fn():
    # Python: preexec_fn "is not safe to use in the presence of threads"; heartjobs' workers have threads
    import ast

    import heartjobs

    found = [
        f"{path.name}:{node.lineno}"
        for path in Path(heartjobs.__file__).parent.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.keyword) and node.arg == "preexec_fn"
    ]
    assert not found, found


def test_the_submitit_internals_heartjobs_uses_are_there_at_the_pinned_version():
    # heartjobs.cluster (task, states) reaches past submitit's public API; only the exact pin makes that safe
    import importlib.metadata as md
    import inspect
    import re

    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import JobPaths, cloudpickle_dump
    from submitit.slurm.slurm import SlurmInfoWatcher

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert md.version("submitit") == re.search(r'"submitit==([^"]+)"', pyproject).group(1) == "1.5.4"
    assert JobPaths(Path("/logs"), "7_1", 0).result_pickle == Path("/logs/7_1_0_result.pkl")
    assert callable(cloudpickle_dump)  # how a task's result is written: (tag, value), read as data by states
    info = SlurmInfoWatcher().read_info("JobID|State\n7_1|RUNNING\n")
    assert info["7_1"]["State"] == "RUNNING"
    assert callable(SignalHandler.has_timed_out) and "self._start_time = " in inspect.getsource(SignalHandler.__init__)
    assert SignalHandler.checkpoint_and_try_requeue.__name__ == "checkpoint_and_try_requeue"  # the USR2 handler
