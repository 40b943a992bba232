"""`heartjobs submit`: real submitit (its local executor: controller and task processes, pickles, the
requeue signal and requeue), and the sbatch script submitit writes for Slurm, read from a fake sbatch.
`heartjobs submit` itself runs in this process (`cli`); the controller and the tasks it starts are real
processes."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission, cloudpickle_dump

from heartjobs import atomic
from heartjobs.cluster import states as cluster_states
from heartjobs.cluster import task as cluster_task
from heartjobs.cluster.options import parse_time
from heartjobs.cluster.submit import queued_elsewhere
from heartjobs.cluster.task import SpecTask, resumable, running_elsewhere
from heartjobs.spec.loading import load_spec
from heartjobs.store.rundir import RunDir, claim_version, versions
from heartjobs.store.status import RUN_DEAD_AFTER_S, now_iso
from heartjobs.system import liveness

from .conftest import SLOW_DCGAN as SLOW
from .conftest import assert_same_run, cli, losses, run_cli, wait_for, write_spec

QUICK = {"epochs": 2, "batch_size": 4, "device": "cpu"}
ROOT = Path(__file__).resolve().parents[1]
LOCAL = ("--executor", "local", "--gpus-per-job", "0")


def _submission(folder: Path) -> dict:
    return json.loads((folder / "latest" / "submission.json").read_text())


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc, which every Linux has)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        fields = liveness.proc_stat(int(proc.name))
        if fields and int(fields[1]) == pid:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_an_array_of_three_jobs_runs_to_the_end_and_a_bad_spec_is_left_out(tmp_path, prepared32):
    specs = [write_spec(tmp_path, name, name.split("_")[0], prepared32, **QUICK) for name in ("gan_a", "wgan_a")]
    specs.append(write_spec(tmp_path, "dcgan_a", "dcgan", prepared32, **QUICK))
    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "bad"\nmodel = "gan"\n[data]\nprepared = "{prepared32}"\n[train]\nepochz = 3\n')
    folder = tmp_path / "submissions"

    result = cli("submit", specs[0], bad, *specs[1:], *LOCAL, "--folder", folder, "--wait", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = result.stderr.strip().splitlines()
    assert any("bad.toml: train.epochz" in line for line in errors)
    assert errors[-1] == "error: 1 of 4 specs refused; the others are submitted"
    assert "Traceback" not in result.stderr
    record = _submission(folder)
    assert [t["job"] for t in record["tasks"]] == ["gan_a", "wgan_a", "dcgan_a"]  # the bad one never went
    for task in record["tasks"]:
        run_dir = tmp_path / "artifacts" / task["job"] / "v0001"
        assert RunDir(run_dir).status().state == "done"
        assert (run_dir / "generator.pt").exists() and (run_dir / "samples" / "epoch_0002.png").exists()
        assert f"done: {run_dir}" in Path(task["stdout"]).read_text()  # the task ran `heartjobs run`
        assert Path(task["snapshot"]).read_bytes() == Path(task["spec"]).read_bytes()
        assert f"{task['job_id']}: COMPLETED" in result.stdout

    status = cli("submit", "--status", "--folder", folder)
    assert status.returncode == 0, status.stderr
    lines = [line.split("\t") for line in status.stdout.strip().splitlines()[1:]]
    assert [(row[1], row[3]) for row in lines] == [(t, "COMPLETED") for t in ("gan_a", "wgan_a", "dcgan_a")]
    assert all(Path(row[5]).exists() for row in lines)  # where each task's log is

    again = cli("submit", *specs, *LOCAL, "--folder", folder, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already finished in") == 3 and "nothing to submit" in again.stdout
    assert versions(folder) == [folder / "v0001"]  # no new submission
    assert not any((tmp_path / "artifacts" / t["job"] / "v0002").exists() for t in record["tasks"])


@pytest.mark.slow
def test_a_local_task_told_to_stop_is_requeued_and_resumes_bit_identical(tmp_path, prepared32, slow_dcgan_reference):
    spec = write_spec(tmp_path, "resume_me", "dcgan", prepared32, **SLOW)
    folder = tmp_path / "submissions"
    run_dir = tmp_path / "artifacts" / "resume_me" / "v0001"

    # a real process whose output pipes are read to the end: it returns while the task runs on, the local
    # controller holding neither pipe
    result = run_cli("submit", spec, *LOCAL, "--folder", folder, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    task = _submission(folder)["tasks"][0]
    wait_for(lambda: (run_dir / "losses.jsonl").exists() and len(losses(run_dir)) >= 2)
    (task_pid,) = _children(int(task["job_id"]))  # the controller's task; its own child is `heartjobs run`
    os.kill(task_pid, signal.SIGUSR2)  # what the local controller sends --signal-delay s before the limit
    # the rest of the epochs after the requeue: seconds on an idle machine, minutes on a busy one
    wait_for(lambda: RunDir(run_dir).status().state == "done", timeout=900)

    log = Path(task["stdout"]).read_text() + Path(task["stderr"]).read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert "stopped by SIGTERM" in log and "resuming" in log  # the run checkpointed, then continued
    status = RunDir(run_dir).status()
    assert status.resumed == 1 and not (run_dir.parent / "v0002").exists()
    assert [e["epoch"] for e in losses(run_dir)] == list(range(1, SLOW["epochs"] + 1))
    assert_same_run(run_dir, slow_dcgan_reference)
    wait_for(lambda: "COMPLETED" in cli("submit", "--status", folder).stdout, timeout=30)


@pytest.mark.slow
def test_a_restarted_task_never_trains_a_finished_job_again(tmp_path, prepared32, monkeypatch):
    """However often a task starts (a requeue after its checkpoint, Slurm restarting it after a preemption
    or a node failure, a signal that came after its run had finished), it runs its job once."""
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, "once", "gan", prepared32, **QUICK)
    runs = tmp_path / "artifacts" / "once"
    task = SpecTask(str(spec), str(tmp_path))
    assert task() == str(runs / "v0001")
    again = task.checkpoint()  # the requeue signal, arriving after the run finished
    assert again.result() == str(runs / "v0001") and versions(runs) == [runs / "v0001"]

    forced = SpecTask(str(spec), str(tmp_path), after=1)  # --force with v0001 there: a new version, once
    assert forced() == str(runs / "v0002")
    assert forced() == str(runs / "v0002") and versions(runs) == [runs / "v0001", runs / "v0002"]


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$FAKE_SLURM/sbatch_script.sh"
echo "Submitted batch job 4242"
"""
# a cluster without accounting storage: squeue lists the live tasks, slurmctld still holds the ended one
FAKE_SQUEUE = """#!/bin/sh
echo "$@" > "$FAKE_SLURM/squeue_args"
printf '4242_1|RUNNING\\n4242_2|PENDING\\n'
"""
FAKE_SACCT = """#!/bin/sh
echo 'sacct: error: Slurm accounting storage is disabled' >&2
exit 1
"""
FAKE_SCONTROL = """#!/bin/sh
case "$*" in
*"show job"*) echo 'JobId=4243 ArrayJobId=4242 ArrayTaskId=0 JobState=COMPLETED Reason=None' ;;
*) echo "$@" >> "$FAKE_SLURM/scontrol_calls" ;;
esac
"""


def _fake_slurm(folder: Path) -> dict:
    """sbatch, srun, squeue, sacct and scontrol on PATH: sbatch keeps the script submitit wrote and answers
    with a job id; squeue and scontrol answer for it; scontrol notes its other calls. (tests/test_slurm.py
    runs the same against real daemons; these stay for what they can't show: GRES, a container, accounts.)"""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    fakes = (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE), ("sacct", FAKE_SACCT), ("scontrol", FAKE_SCONTROL))
    fakes += (("srun", "#!/bin/sh\n"), ("sinfo", "#!/bin/sh\necho gpu:2\n"))  # nodes with GPUs
    for name, text in fakes:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM": str(folder)}


def test_slurm_parameters_submitit_passes_to_sbatch(tmp_path, prepared32):
    specs = [write_spec(tmp_path, f"job{i}", "gan", prepared32, **QUICK) for i in range(3)]
    image = tmp_path / "heartjobs.sif"
    image.write_bytes(b"")
    env = _fake_slurm(tmp_path)
    options = ["--partition", "gpu", "--gpus-per-job", "2", "--time", "1-02:30:00", "--array-parallelism", "2"]
    options += ["--cpus-per-task", "8", "--mem-gb", "32", "--container", image, "--setup", "module load apptainer"]
    options += ["--sbatch", "constraint=a100", "--folder", tmp_path / "submissions"]
    twin = tmp_path / "twin.toml"  # another file, the same configuration
    twin.write_bytes(specs[0].read_bytes())
    namesake = tmp_path / "namesake.toml"  # the same job name (run folder), another configuration
    namesake.write_text(specs[0].read_text().replace("epochs = 2", "epochs = 3"))
    result = cli("submit", *specs, twin, namesake, "--executor", "slurm", *options, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"skipped {twin}: the same configuration as {specs[0]}" in result.stdout
    assert f"skipped {namesake}: the job name 'job0' is {specs[0]}'s too, with another configuration" in result.stdout

    script = (tmp_path / "sbatch_script.sh").read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --time=1590",  # minutes
        "#SBATCH --array=0-2%2",  # one array task per job file, two at a time
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --signal=USR2@120",  # the checkpoint signal, 120 s before the limit
        "#SBATCH --requeue",
        "#SBATCH --constraint=a100",
        "module load apptainer",
    ):
        assert line in script.splitlines(), line
    container = f"apptainer exec --nv --bind {tmp_path},{prepared32} --pwd {tmp_path} {image} python"
    assert f"{container} -u -m submitit.core._submit" in script  # every task runs in the image

    record = _submission(tmp_path / "submissions")
    assert [t["job_id"] for t in record["tasks"]] == ["4242_0", "4242_1", "4242_2"]
    assert (tmp_path / "submissions" / "v0001" / "logs" / "4242_submission.sh").read_text() == script
    for i, task in enumerate(record["tasks"]):
        pickle = Path(task["stdout"]).parent / f"{task['job_id']}_submitted.pkl"
        submitted = DelayedSubmission.load(pickle)  # what the array task will run
        assert isinstance(submitted.function, SpecTask)
        assert Path(submitted.function.spec_path).read_bytes() == specs[i].read_bytes()
        assert submitted.function.after == 0 and submitted.function.lock is None
        assert submitted.function.stop_wait_s == 90  # --signal-delay 120 less 30 s for the requeue
        assert task["stdout"].endswith(f"logs/4242_{i}_0_log.out")

    status = cli("submit", "--status", "--folder", tmp_path / "submissions", env=env)
    assert status.returncode == 0, status.stderr
    states = [line.split("\t")[3] for line in status.stdout.strip().splitlines()[1:]]
    assert states == ["COMPLETED", "RUNNING", "PENDING"]  # without accounting: squeue, then scontrol
    assert "-j 4242" in (tmp_path / "squeue_args").read_text()

    # Submitting again: the tasks Slurm still runs or holds are not submitted twice; the one it ended
    # (COMPLETED by scontrol, though its run never finished here) is.
    again = cli("submit", *specs, "--executor", "slurm", *options, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert f"skipped {specs[1]}: waiting or running in {tmp_path / 'submissions' / 'v0001'} (task 4242_1: RUNNING)" in (
        again.stdout
    )
    assert "(task 4242_2: PENDING)" in again.stdout
    assert [t["spec"] for t in _submission(tmp_path / "submissions")["tasks"]] == [str(specs[0])]


def test_sbatch_refusing_the_array_is_one_line_error_and_takes_no_number(tmp_path, prepared32):
    spec = write_spec(tmp_path, "job", "gan", prepared32, **QUICK)
    env = _fake_slurm(tmp_path)
    sbatch = Path(env["PATH"].split(os.pathsep)[0]) / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: Invalid generic resource (gres) specification' >&2\nexit 1\n")
    folder = tmp_path / "submissions"
    result = cli("submit", spec, "--gpus-per-job", "1", "--folder", folder, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: sbatch refused the submission, nothing was submitted: sbatch: error: Invalid generic resource "
        "(gres) specification; this cluster has no GPUs as a generic resource (GRES) here: pass --gpus-per-job 0"
    ]
    assert versions(folder) == [] and not (folder / "latest").exists()  # a submission of nothing is no submission
    status = cli("submit", "--status", "--folder", folder)
    assert status.returncode == 2 and "not a submission folder" in status.stderr


def test_bad_submit_options_fail_in_one_line_before_anything_is_written(tmp_path, prepared32):
    spec = write_spec(tmp_path, "job", "gan", prepared32, **QUICK)
    folder = tmp_path / "submissions"
    no_slurm = {"PATH": str(tmp_path / "empty")}  # no sbatch, no srun
    cases = [
        (["--executor", "slurm"], no_slurm, "error: --executor slurm: sbatch and srun not found on PATH"),
        ([*LOCAL, "--time", "soon"], {}, "error: --time: 'soon' is not a Slurm time"),
        ([*LOCAL, "--container", tmp_path / "none.sif"], {}, "none.sif: no such image file"),
        ([*LOCAL, "--time", "1"], {}, "error: --signal-delay: 120 s is not shorter than the time limit (1 min)"),
    ]
    for args, env, message in cases:
        result = cli("submit", spec, *args, "--folder", folder, cwd=tmp_path, env=env)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not folder.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = cli("submit", spec, *LOCAL, "--folder", a_file, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith(f"error: --folder {a_file}: cannot make"), result.stderr
    unwritable = tmp_path / "unwritable.toml"
    unwritable.write_text(spec.read_text().replace(str(tmp_path / "artifacts"), str(a_file / "artifacts")))
    result = cli("submit", unwritable, *LOCAL, "--folder", folder, cwd=tmp_path)
    assert result.returncode == 2 and f"unwritable.toml: output.root: cannot make {a_file}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and versions(folder) == []  # no submission
    missing = cli("submit", "--status", "--folder", folder)
    assert missing.returncode == 2 and "not a submission folder" in missing.stderr


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("90:30", 90.5), ("1:00:00", 60), ("24:00:00", 1440), ("2-0", 2880), ("1-02:30:00", 1590)],
)
def test_slurm_time_formats(text, minutes):
    assert parse_time(text) == minutes


def test_exited_tells_a_running_child_from_an_exited_one_without_reaping_it():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert not liveness.exited(proc)
    proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # wait until it has exited, leaving it unreaped
    assert liveness.exited(proc) and proc.returncode is None
    assert proc.wait() == -signal.SIGKILL  # still Popen's to reap
    other = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitpid(other.pid, 0)  # reaped behind Popen's back, as a poll() the signal interrupted may have done
    assert liveness.exited(other)


def test_checkpoint_stops_the_run_and_kills_one_that_outlasts_the_stop_wait(tmp_path):
    obedient = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    task = SpecTask("job.toml", str(tmp_path), stop_wait_s=2.0)
    task._process = obedient
    started = time.monotonic()
    again = task.checkpoint()
    assert time.monotonic() - started < 2.0 and obedient.wait(timeout=5) == -signal.SIGTERM
    assert isinstance(again.function, SpecTask) and again.function.spec_path == "job.toml"

    ignores_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True)"
    ignores_term += "; time.sleep(60)"
    stubborn = subprocess.Popen([sys.executable, "-c", ignores_term], stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # its handler is in place
    task._process = stubborn
    started = time.monotonic()
    task.checkpoint()
    assert 2.0 <= time.monotonic() - started < 5.0
    assert stubborn.wait(timeout=5) == -signal.SIGKILL
    stubborn.stdout.close()


def test_a_pickled_task_unpickles_under_each_name_heartjobs_gave_its_class(tmp_path):
    """submitit pickles a task by reference: the module and name of its class. A pending or requeued task
    submitted by an earlier heartjobs names the class where it was then: heartjobs.cluster (one module), then
    heartjobs.cluster.submit; new pickles name heartjobs.cluster.task. Each must start as a SpecTask, in a
    fresh process (as submitit's task starts: nothing of heartjobs imported yet)."""
    import heartjobs.cluster
    from heartjobs.cluster import submit

    assert SpecTask.__module__ == "heartjobs.cluster.task"
    assert heartjobs.cluster.SpecTask is SpecTask and submit.SpecTask is SpecTask
    task = SpecTask("job.toml", str(tmp_path), after=3, lock=(1, 2), limit_s=600.0, signal_delay_s=60.0)
    task._process = subprocess.Popen([sys.executable, "-c", "pass"])  # not pickled
    task._process.wait()
    cloudpickle_dump(task, tmp_path / "task.pkl")  # as submitit writes it
    new = (tmp_path / "task.pkl").read_bytes()
    assert b"heartjobs.cluster.task" in new and b"SpecTask" in new
    # protocol 2 names a class as b"c<module>\n<name>\n": the same task as older versions named it
    current = pickle.dumps(task, protocol=2)
    assert b"cheartjobs.cluster.task\nSpecTask\n" in current
    payloads = {"new": new}
    for module in ("heartjobs.cluster", "heartjobs.cluster.submit"):
        payloads[module] = current.replace(b"heartjobs.cluster.task\n", module.encode() + b"\n")
        assert payloads[module] != current
    for name, payload in payloads.items():
        restored = pickle.loads(payload)
        assert type(restored) is SpecTask, name
        assert (restored.spec_path, restored.after, restored.lock, restored.limit_s) == ("job.toml", 3, (1, 2), 600.0)
        assert restored.signal_delay_s == 60.0 and restored._process is None
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(payload)
        load = "import pickle, sys; t = pickle.load(open(sys.argv[1], 'rb')); print(type(t).__module__, t.after)"
        # in the checkout's folder: python -c imports its heartjobs
        fresh = subprocess.run([sys.executable, "-c", load, str(path)], capture_output=True, text=True, cwd=ROOT)
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout.split() == ["heartjobs.cluster.task", "3"], name


def _write_status(run_dir: Path, **fields) -> None:
    atomic.write_json(run_dir / "status.json", {"state": "running", "heartbeat": now_iso(), **fields})


@pytest.mark.slow
def test_a_run_counts_as_running_only_while_its_own_process_lives(tmp_path, prepared32, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec_path = write_spec(tmp_path, "alive", "gan", prepared32, **QUICK)
    spec = load_spec(spec_path)
    run_dir = claim_version(spec.run_root)
    atomic.write_json(run_dir / "resolved.json", {"spec_hash": spec.spec_hash})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    live = {"pid": sleeper.pid, "host": socket.gethostname(), "pid_started": liveness.process_start_ticks(sleeper.pid)}
    _write_status(run_dir, **live)
    assert resumable(spec) == run_dir and resumable(spec, after=1) is None  # --force: only newer versions
    assert running_elsewhere(spec) == run_dir
    _write_status(run_dir, **{**live, "pid_started": live["pid_started"] + 1})  # its pid, another process
    assert running_elsewhere(spec) is None
    _write_status(run_dir, pid=1, host="elsewhere")  # another host: its heartbeat decides
    assert running_elsewhere(spec) == run_dir
    old = datetime.fromtimestamp(time.time() - RUN_DEAD_AFTER_S - 60, UTC).isoformat(timespec="seconds")
    _write_status(run_dir, pid=1, host="elsewhere", heartbeat=old)  # a node that failed
    assert running_elsewhere(spec) is None

    # A task waits while the run is alive, then takes the version over and finishes it.
    _write_status(run_dir, **live)
    monkeypatch.setattr(cluster_task, "RUNNING_POLL_S", 0.05)
    looked = []  # each time the waiting task looks whether the run still lives elsewhere

    def counted(*args, **kwargs):
        looked.append(running_elsewhere(*args, **kwargs))
        return looked[-1]

    monkeypatch.setattr(cluster_task, "running_elsewhere", counted)
    outcome = {}
    waiting = threading.Thread(target=lambda: outcome.update(run=SpecTask(str(spec_path), str(tmp_path))()))
    waiting.start()
    wait_for(lambda: len(looked) >= 5)  # it looked five times, found the run alive each time, and waits on
    assert looked[:5] == [run_dir] * 5
    assert waiting.is_alive() and not (run_dir / "generator.pt").exists()
    sleeper.kill()
    sleeper.wait()
    waiting.join(timeout=120)
    assert outcome["run"] == str(run_dir) and RunDir(run_dir).status().state == "done"
    assert versions(spec.run_root) == [run_dir]


def test_states_without_accounting_come_from_squeue_then_scontrol_then_the_tasks_files(tmp_path, monkeypatch):
    """A cluster without accounting storage: squeue for the live tasks, scontrol for the recently ended,
    then submitit's result file; a task of a submission made a moment ago that nobody lists is pending,
    an older one that left no trace has ended. Real daemons show the first two (tests/test_slurm.py); the
    purged and the just-submitted cases need a controller that forgot or hasn't caught up, so fakes."""
    from submitit.core.utils import JobPaths

    env = _fake_slurm(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("FAKE_SLURM", env["FAKE_SLURM"])
    root = tmp_path / "submissions"
    logs = tmp_path / "logs"
    logs.mkdir()

    def task(job_id: str, spec_hash: str) -> dict:
        stdout = JobPaths(logs, job_id, 0).stdout
        return {"job_id": job_id, "job": spec_hash, "spec_hash": spec_hash, "stdout": str(stdout), "run_root": "x"}

    old = "2026-01-01T00:00:00+00:00"
    tasks = [task("4242_0", "h0"), task("4242_1", "h1"), task("4242_2", "h2"), task("4242_3", "h3")]
    tasks.append(task("4242_4", "h4"))
    cloudpickle_dump(("success", "done"), JobPaths(logs, "4242_3", 0).result_pickle)
    slurm = {"executor": "slurm", "created": old, "tasks": tasks}
    states = cluster_states.scheduler_states(slurm)
    assert states == {"4242_0": "COMPLETED", "4242_1": "RUNNING", "4242_2": "PENDING", "4242_3": "COMPLETED"} | {
        "4242_4": "ENDED"  # purged from slurmctld, no result: cancelled or killed long ago
    }
    assert cluster_states.scheduler_states({**slurm, "created": now_iso()})["4242_4"] == "PENDING"  # not listed yet

    atomic.write_json(claim_version(root) / "submission.json", slurm)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        log = str(tmp_path / "logs" / f"{sleeper.pid}_0_log.out")  # a record without pid_started
        local_task = {"job_id": str(sleeper.pid), "job": "b", "spec_hash": "h9", "stdout": log}
        local = {"executor": "local", "host": socket.gethostname(), "tasks": [local_task]}
        atomic.write_json(claim_version(root) / "submission.json", local)
        notes: list[str] = []
        held = queued_elsewhere(root, {"h0", "h1", "h2", "h3", "h4", "h9"}, notes)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert held == {
        "h1": f"waiting or running in {root / 'v0001'} (task 4242_1: RUNNING)",
        "h2": f"waiting or running in {root / 'v0001'} (task 4242_2: PENDING)",
        "h9": f"waiting or running in {root / 'v0002'} (task {sleeper.pid}: RUNNING)",
    }
    assert notes == []


def test_the_report_and_a_task_agree_when_a_run_elsewhere_is_dead(tmp_path, prepared32, monkeypatch):
    # one threshold for a run's heartbeat (heartjobs.store.status.RUN_DEAD_AFTER_S), not one per module
    from heartjobs.report.summary import _state
    from heartjobs.store.status import WORKER_DEAD_AFTER_S

    monkeypatch.chdir(tmp_path)
    spec = load_spec(write_spec(tmp_path, "elsewhere", "gan", prepared32, **QUICK))
    run_dir = claim_version(spec.run_root)
    atomic.write_json(run_dir / "resolved.json", {"spec_hash": spec.spec_hash})
    for age in (WORKER_DEAD_AFTER_S + 30, RUN_DEAD_AFTER_S - 30, RUN_DEAD_AFTER_S + 30):
        beat = datetime.fromtimestamp(time.time() - age, UTC).isoformat(timespec="seconds")
        _write_status(run_dir, pid=1, host="another-host", heartbeat=beat)
        alive = age < RUN_DEAD_AFTER_S
        assert (running_elsewhere(spec) == run_dir) is alive, age
        assert _state(RunDir(run_dir).status()) == ("running" if alive else "died"), age
