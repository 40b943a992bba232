"""The directory queue and its worker: workers in this process (`cli`) or, where a signal, a kill or a race
between workers is what is tested, as real subprocesses; every job runs as a real `heartjobs run` child."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heartjobs import atomic
from heartjobs.queue.folders import Queue
from heartjobs.store.rundir import versions
from heartjobs.store.status import now_iso

from .conftest import cli, needs_root, run_cli, wait_for, write_spec

QUICK = {"epochs": 2, "batch_size": 4, "device": "cpu"}
# slow enough to be caught mid-run: DCGAN, batches of 2, a checkpoint every epoch; the tests signal as soon
# as a checkpoint appears, with most epochs left
SLOW = {"epochs": 10, "batch_size": 2, "checkpoint_every": 1, "device": "cpu"}


def _worker(queue, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "heartjobs", "worker", "--queue", str(queue), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _one_slow_job_and_a_worker(tmp_path, prepared, name: str, slot: str):
    """The queue tmp_path/q holding one SLOW DCGAN job, a worker serving it; its run folder v0001."""
    queue = tmp_path / "q"
    Queue(queue).add(write_spec(tmp_path, name, "dcgan", prepared, **SLOW))
    return queue, tmp_path / "artifacts" / name / "v0001", _worker(queue, "--slot", slot)


def _names(queue, state):
    return [e.name for e in Queue(queue).entries(state)]


def test_enqueue_refuses_bad_specs_and_queues_the_rest_in_order(tmp_path, prepared32):
    good = [write_spec(tmp_path, f"job{i}", "gan", prepared32, **QUICK) for i in range(3)]
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nmodel = "gan"\n[data]\nprepared = "/nowhere"\n')
    result = cli("enqueue", good[0], bad, good[1], good[2], "--queue", tmp_path / "q")
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert any("bad.toml: data.prepared" in line for line in errors)
    assert errors[-1] == "error: 1 of 4 specs refused; the others are queued"
    assert [e.path.name for e in Queue(tmp_path / "q").entries("pending")] == [
        "000001_job0.toml",
        "000002_job1.toml",
        "000003_job2.toml",
    ]


@pytest.mark.slow
def test_worker_runs_everything_once_and_a_failing_job_goes_to_failed(tmp_path, prepared32):
    queue = tmp_path / "q"
    jobs = [write_spec(tmp_path, name, model, prepared32, **QUICK) for name, model in (("a", "gan"), ("b", "wgan"))]
    for job in jobs:
        Queue(queue).add(job)
    # valid when queued, broken when run: its prepared set is gone by then
    doomed_data = tmp_path / "doomed_data"
    shutil.copytree(prepared32, doomed_data)
    Queue(queue).add(write_spec(tmp_path, "doomed", "gan", doomed_data, **QUICK))
    shutil.rmtree(doomed_data)

    result = cli("worker", "--queue", queue, "--until-empty", "--slot", "test-a")
    assert result.returncode == 0, result.stderr
    assert _names(queue, "done") == ["a", "b"] and _names(queue, "failed") == ["doomed"]
    assert _names(queue, "pending") == _names(queue, "running") == []
    failed = json.loads((queue / "failed" / "000003_doomed.json").read_text())
    assert failed["state"] == "failed" and "doomed_data" in failed["error"]
    done = json.loads((queue / "done" / "000001_a.json").read_text())
    assert done["state"] == "done" and done["exit_code"] == 0 and done["run_dir"].endswith("a/v0001")
    assert "epoch 2/2" in (queue / "done" / "000001_a.log").read_text()

    # idempotent: the same job again is skipped, unless forced
    Queue(queue).add(jobs[0])
    again = cli("worker", "--queue", queue, "--slot", "test-a")
    assert "already finished" in again.stderr
    assert json.loads((queue / "done" / "000004_a.json").read_text())["state"] == "skipped"
    Queue(queue).add(jobs[0])
    forced = cli("worker", "--queue", queue, "--slot", "test-a", "--force")
    assert forced.returncode == 0
    assert [p.name for p in versions(tmp_path / "artifacts" / "a")] == ["v0001", "v0002"]

    status = cli("queue", "status", "--queue", queue)
    assert status.returncode == 0 and "000003_doomed.toml" in status.stdout


@pytest.mark.slow
def test_sigkill_of_the_worker_mid_job_then_a_new_worker_resumes_it(tmp_path, prepared32):
    queue = tmp_path / "q"
    Queue(queue).add(write_spec(tmp_path, "long", "dcgan", prepared32, **SLOW))
    Queue(queue).add(write_spec(tmp_path, "after", "gan", prepared32, **QUICK))
    run_dir = tmp_path / "artifacts" / "long" / "v0001"
    first = _worker(queue, "--slot", "test-kill")
    wait_for(lambda: (run_dir / "checkpoints" / "epoch_0003.pt").exists())
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert _names(queue, "running") == ["long"]  # left behind by the dead worker

    second = cli("worker", "--queue", queue, "--slot", "test-kill")
    assert second.returncode == 0, second.stderr
    assert "its worker died" in second.stderr and "resuming" in second.stderr
    assert sorted(_names(queue, "done")) == ["after", "long"]  # each exactly once
    assert _names(queue, "pending") == _names(queue, "running") == _names(queue, "failed") == []
    assert [p.name for p in versions(tmp_path / "artifacts" / "long")] == ["v0001"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["resumed"] >= 1 and status["epochs_done"] == SLOW["epochs"]
    # the orphaned job's result record went to the dead worker's own folder, not into the queue
    assert not [p for p in queue.rglob("*") if "result" in p.name]


def test_a_job_that_dies_before_writing_its_result_fails_with_the_last_line_it_printed(tmp_path, prepared32):
    # A child that can't even load (here: no torch) writes no result record; the failure still says why.
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("no torch here")\n')
    queue = tmp_path / "q"
    Queue(queue).add(write_spec(tmp_path, "notorch", "gan", prepared32, **QUICK))
    # a real worker process with the broken torch on its path too: the worker itself never needs torch
    result = run_cli("worker", "--queue", queue, "--slot", "test-notorch", env={"PYTHONPATH": str(fake.parent)})
    assert result.returncode == 0, result.stderr
    failed = json.loads((queue / "failed" / "000001_notorch.json").read_text())
    assert failed["error"] == "exit code 1: ImportError: no torch here" and failed["run_dir"] is None


def test_a_worker_heartbeat_in_either_encoding_holds_its_job_and_an_unreadable_one_does_not(tmp_path, prepared32):
    queue = Queue(tmp_path / "q")
    queue.add(write_spec(tmp_path, "held", "gan", prepared32, **QUICK))
    entry = queue.claim()
    beat = entry.sidecar("worker.json")
    elsewhere = {"pid": 1, "host": "another-host", "pid_started": None}
    for fresh in (now_iso(), time.time()):  # ISO 8601, and seconds since the epoch (older workers)
        atomic.write_json(beat, {**elsewhere, "heartbeat": fresh})
        assert queue.recover_stale() == [] and _names(queue.root, "running") == ["held"]
    atomic.write_json(beat, {**elsewhere, "heartbeat": "yesterday"})
    assert [e.name for e in queue.recover_stale()] == ["held"] and _names(queue.root, "pending") == ["held"]


@pytest.mark.slow
def test_two_workers_on_one_queue_run_each_job_once(tmp_path, prepared32):
    queue = tmp_path / "q"
    names = [f"j{i}" for i in range(6)]
    for name in names:
        Queue(queue).add(write_spec(tmp_path, name, "gan", prepared32, **QUICK))
    workers = [_worker(queue, "--slot", f"test-pair-{i}") for i in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    assert sorted(_names(queue, "done")) == names
    for name in names:  # one run per job: nobody ran a job twice
        assert [p.name for p in versions(tmp_path / "artifacts" / name)] == ["v0001"]
    ran = [line for _, err in outputs for line in err.splitlines() if ": running on" in line]
    assert len(ran) == len(names)


@needs_root
def test_a_device_lock_is_shared_by_workers_of_other_users(monkeypatch):
    # compose runs each container as its caller's uid: another uid must open the lock file for writing,
    # as heartjobs does, and find it held (run as root, like CI; the probe runs as uid 4242)
    import tempfile

    from heartjobs.system.locks import device_lock

    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # a folder uid 4242 can reach (pytest's tmp_path is 0700)
    shared.chmod(0o755)
    monkeypatch.setenv("HEARTJOBS_LOCK_DIR", str(shared / "locks"))
    try:
        with device_lock("gpu-test") as held:
            assert held
            probe = f"exec 9>>{shared / 'locks' / 'gpu-test.lock'} && flock --nonblock --conflict-exit-code 3 9"
            other = subprocess.run(["sh", "-c", probe], user=4242, group=4242, capture_output=True, text=True)
        assert other.returncode == 3, other.stderr  # opened for writing (no PermissionError) and found held
    finally:
        shutil.rmtree(shared)


def test_a_second_worker_on_the_same_device_waits_for_the_first(tmp_path, prepared32):
    queue = tmp_path / "q"
    Queue(queue).add(write_spec(tmp_path, "slow", "dcgan", prepared32, **{**SLOW, "epochs": 6}))
    first = _worker(queue, "--slot", "test-shared")
    wait_for(lambda: _names(queue, "running") == ["slow"])
    second = _worker(queue, "--slot", "test-shared")
    _, err = second.communicate(timeout=300)
    first.communicate(timeout=300)
    assert "busy with another job; waiting" in err
    assert _names(queue, "done") == ["slow"]
    assert [p.name for p in versions(tmp_path / "artifacts" / "slow")] == ["v0001"]


@pytest.mark.slow
def test_sigterm_to_the_worker_checkpoints_the_job_and_puts_it_back_to_resume(tmp_path, prepared32):
    queue, run_dir, worker = _one_slow_job_and_a_worker(tmp_path, prepared32, "stopped", "test-term")
    wait_for(lambda: (run_dir / "checkpoints" / "epoch_0002.pt").exists())
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0 and "back in pending/ to resume" in err and "error:" not in err
    assert [e.path.name for e in Queue(queue).entries("pending")] == ["000001_stopped.r1.toml"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"

    again = cli("worker", "--queue", queue, "--slot", "test-term")
    assert again.returncode == 0 and "resuming" in again.stderr
    assert _names(queue, "done") == ["stopped"] and _names(queue, "pending") == []
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["resumed"] == 1
    assert [p.name for p in versions(tmp_path / "artifacts" / "stopped")] == ["v0001"]


@pytest.mark.slow
def test_a_run_stopped_or_killed_from_outside_the_worker_is_resumed_a_few_times_then_failed(tmp_path, prepared32):
    from heartjobs.queue.folders import OUTSIDE_STOPS_RESUMED
    from heartjobs.system.liveness import process_alive

    queue, run_dir, worker = _one_slow_job_and_a_worker(tmp_path, prepared32, "outside", "test-outside")
    signals = [signal.SIGTERM] + [signal.SIGKILL] * OUTSIDE_STOPS_RESUMED  # one more than it forgives
    for kill_number, sig in enumerate(signals, start=1):
        # the run's own process (the worker's child), from outside: an admin, a preemption, the OOM killer
        checkpoint = run_dir / "checkpoints" / f"epoch_{kill_number:04d}.pt"
        wait_for(checkpoint.exists, proc=worker)
        status = json.loads((run_dir / "status.json").read_text())
        os.kill(status["pid"], sig)
        wait_for(functools.partial(lambda record: not process_alive(record), status), proc=worker)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "its run was stopped by signal 15 from outside the worker; back in pending/ to resume" in err
    assert err.count("its run was killed by signal 9 from outside the worker") == OUTSIDE_STOPS_RESUMED - 1
    record = json.loads((queue / "failed" / f"000001_outside.r{OUTSIDE_STOPS_RESUMED}.json").read_text())
    assert "killed by signal 9" in record["error"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["resumed"] == OUTSIDE_STOPS_RESUMED and [p.name for p in versions(run_dir.parent)] == ["v0001"]


def test_a_configuration_another_process_is_running_is_not_started_twice(tmp_path, prepared32):
    from heartjobs.spec.loading import load_spec
    from heartjobs.system.locks import config_lock

    spec_file = write_spec(tmp_path, "twice", "gan", prepared32, **QUICK)
    spec = load_spec(spec_file)
    queue = Queue(tmp_path / "q")
    queue.add(spec_file)
    # another process (a worker's job, a user's run) is running this configuration: it holds the lock
    with config_lock(spec.run_root, spec.spec_hash):
        result = cli("worker", "--queue", queue.root, "--slot", "test-twice")
        direct = cli("run", spec_file, "--resume")
    assert result.returncode == 0, result.stderr
    record = json.loads((queue.root / "done" / "000001_twice.json").read_text())
    assert record["state"] == "skipped" and "being run by another process" in record["reason"]
    assert "skipped: the same configuration" in result.stderr
    assert direct.returncode == 75 and "the same configuration" in direct.stderr and "Traceback" not in direct.stderr
    assert versions(tmp_path / "artifacts" / "twice") == []  # nothing started


def test_a_forced_rerun_recovered_by_a_worker_without_force_is_resumed_not_skipped(tmp_path, prepared32):
    from heartjobs.runner.lifecycle import run_job

    spec_file = write_spec(tmp_path, "again", "gan", prepared32, **QUICK)
    first = run_job(spec_file)  # v0001, done
    forced = run_job(spec_file)  # v0002: the forced rerun ...
    status = json.loads((forced / "status.json").read_text())
    (forced / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))  # ... whose worker died
    # the queue entry as the dead --force worker's recovery left it: counted recovered, marked forced
    queue = Queue(tmp_path / "q")
    pending = Path(queue.add(spec_file))
    recovered = pending.with_name(pending.name.replace(".toml", ".r1.toml"))
    pending.rename(recovered)
    atomic.write_json(recovered.with_name(recovered.name.replace(".toml", ".forced")), {"forced_by": {}})
    result = cli("worker", "--queue", queue.root, "--slot", "test-forced")  # no --force
    assert result.returncode == 0, result.stderr
    record = json.loads((queue.root / "done" / "000001_again.r1.json").read_text())
    assert record["state"] == "done" and record["run_dir"] == str(forced)  # the forced version, finished
    assert json.loads((forced / "status.json").read_text())["state"] == "done"
    assert versions(tmp_path / "artifacts" / "again") == [first, forced]  # and no third


def test_a_recovered_job_whose_version_another_process_runs_is_skipped_not_failed(tmp_path, prepared32):
    from heartjobs.runner.lifecycle import run_job
    from heartjobs.system.locks import run_lock

    spec_file = write_spec(tmp_path, "taken", "gan", prepared32, **QUICK)
    run_dir = run_job(spec_file)
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    queue = Queue(tmp_path / "q")
    pending = Path(queue.add(spec_file))
    pending.rename(pending.with_name(pending.name.replace(".toml", ".r1.toml")))  # recovered: it resumes
    with run_lock(run_dir):  # a user's --resume got there first
        result = cli("worker", "--queue", queue.root, "--slot", "test-taken")
    assert result.returncode == 0, result.stderr
    record = json.loads((queue.root / "done" / "000001_taken.r1.json").read_text())
    assert record["state"] == "skipped" and "another process is running it" in record["reason"]
    assert record["exit_code"] == 75


# --- overlap: a job measured while the next one trains ---

# measured with untrained Inception weights (no download), enough repeats for a stop to land between them
OVERLAP_EVAL = {"weights": "untrained", "dims": 64, "n_generated": 48, "repeats": 3, "batch_size": 48, "frd": False}


@pytest.fixture(scope="module")
def measured_reference(tmp_path_factory, prepared32) -> dict:
    """fid.json of job "measured" trained and measured in one process: what its overlapped measurement equals."""
    from heartjobs.runner.lifecycle import run_job

    folder = tmp_path_factory.mktemp("measured_reference")
    run_dir = run_job(write_spec(folder, "measured", "gan", prepared32, eval=OVERLAP_EVAL, **QUICK))
    return json.loads((run_dir / "fid.json").read_text())


def _measured_then_training(tmp_path, prepared32, slot: str, **after):
    """A queue holding job "measured" (GAN, measured) then job "after" (DCGAN, batches of 2, `after`'s epochs),
    a worker with --overlap 1 serving it, and the two run folders."""
    queue = tmp_path / "q"
    Queue(queue).add(write_spec(tmp_path, "measured", "gan", prepared32, eval=OVERLAP_EVAL, **QUICK))
    Queue(queue).add(write_spec(tmp_path, "after", "dcgan", prepared32, **{**SLOW, **after}))
    runs = tmp_path / "artifacts" / "measured" / "v0001", tmp_path / "artifacts" / "after" / "v0001"
    return queue, runs, _worker(queue, "--slot", slot, "--overlap", "1")


def _same_measurement(ours: dict, reference: dict) -> bool:
    """Every number of every repeat, and the summaries, alike."""
    same = ("repeats", "fid_mean", "fid_std", "kid_mean", "kid_std", "n_generated", "dims", "settings_hash")
    return all(ours[key] == reference[key] for key in same)


@pytest.mark.slow
def test_with_overlap_a_job_is_measured_while_the_next_trains_and_measures_as_in_one_process(
    tmp_path, prepared32, measured_reference
):
    from heartjobs.queue.folders import status as queue_status
    from heartjobs.system.liveness import process_alive

    # "after" trains far longer than this test waits: it is still training whenever "measured" is recorded
    queue, (measured, after), worker = _measured_then_training(tmp_path, prepared32, "test-overlap", epochs=100000)
    beat = queue / "running" / "000001_measured.worker.json"
    wait_for(lambda: beat.exists() and json.loads(beat.read_text()).get("phase") == "evaluating", proc=worker)
    rows = {row["name"]: row for row in queue_status(Queue(queue))["running"]}
    assert rows["measured"]["phase"] == "evaluating"

    wait_for((queue / "done" / "000001_measured.json").exists, proc=worker)
    wait_for((after / "status.json").exists, proc=worker)  # its process was started before that was recorded
    after_status = json.loads((after / "status.json").read_text())
    assert after_status["state"] == "running" and process_alive(after_status)  # the next job trains meanwhile
    assert queue_status(Queue(queue))["running"][0]["phase"] == "training"
    record = json.loads((queue / "done" / "000001_measured.json").read_text())
    assert record["state"] == "done" and record["training_s"] > 0 and record["evaluation_s"] > 0
    assert record["seconds"] >= record["training_s"]
    # measured in its own process, the run is what one process makes: its status done, not counted as a resume
    status = json.loads((measured / "status.json").read_text())
    assert status["state"] == "done" and status["resumed"] == 0 and "phase" not in status
    assert not list(measured.glob("env.resumed*"))
    assert _same_measurement(json.loads((measured / "fid.json").read_text()), measured_reference)

    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert "measured: trained; measuring it while the next job trains" in err
    assert _names(queue, "pending") == ["after"] and _names(queue, "done") == ["measured"]


@pytest.mark.slow
def test_a_worker_killed_while_a_measurement_is_pending_is_recovered_and_measures_as_in_one_process(
    tmp_path, prepared32, measured_reference
):
    from heartjobs.system.liveness import process_alive

    queue, (measured, after), worker = _measured_then_training(tmp_path, prepared32, "test-pending")
    status_file = measured / "status.json"

    def measuring() -> bool:
        status = json.loads(status_file.read_text()) if status_file.exists() else {}
        return status.get("state") == "running" and status.get("phase") == "evaluating"

    wait_for(measuring, proc=worker)
    measurement = json.loads(status_file.read_text())  # the measurement's own process
    os.kill(measurement["pid"], signal.SIGSTOP)  # held mid-measurement while its worker dies
    try:
        assert json.loads(status_file.read_text())["state"] != "done"
        wait_for((after / "status.json").exists, proc=worker)  # meanwhile the worker goes on to train the next job
        worker.kill()
        worker.wait()
    finally:
        os.kill(measurement["pid"], signal.SIGCONT)  # it takes the SIGTERM its worker's death sent it
    wait_for(lambda: not process_alive(measurement))
    wait_for(lambda: not process_alive(json.loads((after / "status.json").read_text())))
    assert _names(queue, "running") == ["measured", "after"]
    assert json.loads(status_file.read_text())["state"] == "interrupted"

    again = cli("worker", "--queue", queue, "--slot", "test-pending", "--overlap", "1")
    assert again.returncode == 0, again.stderr
    assert _names(queue, "done") == ["measured", "after"]
    assert _names(queue, "pending") == _names(queue, "running") == _names(queue, "failed") == []
    assert [p.name for p in versions(tmp_path / "artifacts" / "measured")] == ["v0001"]
    assert json.loads(status_file.read_text())["state"] == "done"
    assert _same_measurement(json.loads((measured / "fid.json").read_text()), measured_reference)
