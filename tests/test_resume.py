"""Interruption and resume: real signals (SIGKILL, SIGTERM, SIGINT, SIGUSR2) to real `heartjobs run`
processes, SIGKILL in the middle of a background checkpoint write included, then the resume in this process
(`cli`), bit for bit against the session's reference run; and refusing a changed spec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from heartjobs.errors import HeartjobsError
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.loading import load_spec
from heartjobs.store.checkpoint import list_checkpoints, load_checkpoint, load_generator

from .conftest import SLOW_DCGAN, assert_same_run, cli, losses, run_cli, wait_for, write_spec

SLOW = SLOW_DCGAN


def _start(spec):
    return subprocess.Popen(
        [sys.executable, "-m", "heartjobs", "run", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# `heartjobs run` in a real process whose torch.save, when the background writer (not the training thread)
# writes epoch_0004.pt, writes the first half of the file and then SIGKILLs its own process: the kill lands
# in the middle of a background write, with the training thread gone on past that checkpoint.
_KILLED_MID_WRITE = """
import io, os, signal, sys, threading, torch
from heartjobs.cli.main import main
save = torch.save
def half_then_sigkill(obj, f, *args, **kwargs):
    name = os.path.basename(getattr(f, "name", ""))
    if name.startswith(".epoch_0004.pt.") and threading.current_thread() is not threading.main_thread():
        whole = io.BytesIO()
        save(obj, whole, *args, **kwargs)
        f.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, f, *args, **kwargs)
torch.save = half_then_sigkill
sys.exit(main(["run", sys.argv[1]]))
"""


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_background_checkpoint_write_then_resume_is_bit_identical(
    tmp_path, prepared32, slow_dcgan_reference
):
    spec = write_spec(tmp_path, "resume_me", "dcgan", prepared32, **SLOW)
    run_dir = tmp_path / "artifacts" / "resume_me" / "v0001"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(spec)], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "running" and status["epochs_done"] >= 4  # died mid-run, training gone on
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["epoch_0002.pt"]
    [partial] = (run_dir / "checkpoints").glob(".epoch_0004.pt.*.tmp")  # half a file, never renamed
    assert partial.stat().st_size > 0

    result = cli("run", spec, "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr and "v0001" in result.stdout
    assert f"removed checkpoints/{partial.name}, left by a killed process" in result.stderr
    assert not (run_dir.parent / "v0002").exists()  # continued in place, no new version
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["resumed"] == 1
    assert_same_run(run_dir, slow_dcgan_reference)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_marks_interrupted_and_resumes_bit_identical(
    tmp_path, prepared32, slow_dcgan_reference
):
    spec = write_spec(tmp_path, "resume_me", "dcgan", prepared32, **SLOW)
    run_dir = tmp_path / "artifacts" / "resume_me" / "v0001"
    proc = _start(spec)
    wait_for(lambda: (run_dir / "losses.jsonl").exists() and len(losses(run_dir)) >= 3, proc=proc)
    proc.send_signal(signal.SIGTERM)  # wherever it lands; the mid-epoch state itself: test_training.py
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr and "Traceback" not in stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["error"] == "stopped by SIGTERM"
    newest = list_checkpoints(run_dir / "checkpoints")[-1]
    state = torch.load(newest, weights_only=True)
    assert state["epoch"] == status["epochs_done"] >= 3  # nothing finished was lost

    result = cli("run", spec, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_run(run_dir, slow_dcgan_reference)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR2])  # Ctrl-C; Slurm's time-limit signal
def test_sigint_and_sigusr2_also_checkpoint_and_exit_non_zero(tmp_path, prepared32, sig):
    spec = write_spec(tmp_path, "ctrl_c", "dcgan", prepared32, **SLOW)
    run_dir = tmp_path / "artifacts" / "ctrl_c" / "v0001"
    proc = _start(spec)
    wait_for(lambda: (run_dir / "losses.jsonl").exists() and len(losses(run_dir)) >= 1, proc=proc)
    os.kill(proc.pid, sig)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    assert list_checkpoints(run_dir / "checkpoints")


def test_resume_refuses_a_changed_spec_and_never_touches_finished_versions(tmp_path, prepared32):
    quick = {**SLOW, "epochs": 2}
    spec = write_spec(tmp_path, "job", "gan", prepared32, **quick)
    first = run_job(spec)
    # finished: --resume has nothing to continue; it says so and leaves v0001 as it was (no retraining)
    stamp = (first / "generator.pt").stat().st_mtime_ns
    assert run_job(spec, resume=True) == first and (first / "generator.pt").stat().st_mtime_ns == stamp
    second = run_job(spec)  # a new version is asked for explicitly
    assert second.name == "v0002" and (first / "generator.pt").stat().st_mtime_ns == stamp
    # an unfinished version made under another configuration is not resumed
    status = json.loads((second / "status.json").read_text())
    (second / "status.json").write_text(json.dumps({**status, "state": "interrupted", "pid": None}))
    changed = write_spec(tmp_path, "job", "gan", prepared32, **{**quick, "lr": 0.001})
    with pytest.raises(HeartjobsError, match="spec_hash: .*v0002 was made with spec .*refusing to resume") as refused:
        run_job(changed, resume=True)
    assert "(train.lr: 0.0002 -> 0.001)" in str(refused.value)  # names the values that differ
    # and a checkpoint carries its spec hash too
    checkpoint = list_checkpoints(second / "checkpoints")[-1]
    with pytest.raises(HeartjobsError, match="spec_hash: the checkpoint was made with spec"):
        load_checkpoint(checkpoint, load_spec(changed).spec_hash)


def test_a_running_version_is_not_resumed_twice(tmp_path, prepared32):
    # far more epochs than the second process takes to start: the first must still be running when it asks
    # (SLOW's 12 epochs had ended by then on a loaded machine); it is killed at the end either way
    spec = write_spec(tmp_path, "busy", "dcgan", prepared32, **{**SLOW, "epochs": 2000})
    run_dir = tmp_path / "artifacts" / "busy" / "v0001"
    proc = _start(spec)
    try:
        wait_for(lambda: (run_dir / "losses.jsonl").exists(), proc=proc)
        # a real process: heartjobs reads HEARTJOBS_RESUME_WAIT_S when it starts
        result = run_cli("run", spec, "--resume", env={"HEARTJOBS_RESUME_WAIT_S": "1"})
        assert result.returncode == 75 and "is being run by another process" in result.stderr, result.stderr
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigterm_during_fid_interrupts_and_resume_only_evaluates_the_repeats_left(tmp_path, prepared32):
    # each finished repeat (FID and KID, then its FRD) is kept as it ends: a slot shorter than the whole
    # evaluation still gets through it, one repeat at a time, instead of starting over each time
    fid = {"n_generated": 40, "repeats": 3, "dims": 64, "batch_size": 40, "weights": "untrained", "kid": True}
    fid |= {"kid_subsets": 5, "kid_subset_size": 20, "frd": True, "frd_n": 20}
    spec = write_spec(tmp_path, "fid_stop", "gan", prepared32, eval=fid, epochs=2, batch_size=4, device="cpu")
    run_dir = tmp_path / "artifacts" / "fid_stop" / "v0001"
    proc = _start(spec)

    def first_repeat_kept() -> bool:
        logs = list(run_dir.glob("eval_progress_*.json"))
        return bool(logs) and "frd" in json.loads(logs[0].read_text())["repeats"].get("0", {})

    wait_for(first_repeat_kept, proc=proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "during evaluation" in stderr
    status_file = run_dir / "status.json"
    assert json.loads(status_file.read_text())["state"] == "interrupted" and not (run_dir / "fid.json").exists()
    kept = json.loads(next(run_dir.glob("eval_progress_*.json")).read_text())["repeats"]
    assert "0" in kept and "2" not in kept  # stopped between repeats, before the last
    trained = load_generator(run_dir / "generator.pt")[0].state_dict()

    result = cli("run", spec, "--resume")
    assert result.returncode == 0, result.stderr
    assert "epoch" not in result.stderr.replace("epoch_", "")  # no training: only the evaluation ran
    for r in kept:  # not measured again
        assert f"repeat {int(r) + 1}/3: measured before this process, kept" in result.stderr
    assert "repeat 3/3: measured before" not in result.stderr
    status = json.loads(status_file.read_text())
    assert status["state"] == "done" and "phase" not in status and (run_dir / "fid.json").is_file()
    assert not list(run_dir.glob("eval_progress_*.json"))  # gone once the record is written
    resumed = load_generator(run_dir / "generator.pt")[0].state_dict()
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)  # the same weights, not retrained

    # the pieced-together record equals one measurement from start to end, value for value
    pieced = json.loads((run_dir / "fid.json").read_text())
    assert cli("fid", run_dir).returncode == 0
    whole = json.loads((run_dir / "fid.json").read_text())
    assert pieced["repeats"] == whole["repeats"] and len(whole["repeats"]) == 3
    assert pieced["frd"]["mean"] == whole["frd"]["mean"] and pieced["kid_mean"] == whole["kid_mean"]
    assert pieced["frd"]["top_differences"] == whole["frd"]["top_differences"]


def test_a_version_left_without_identity_is_never_resumed(tmp_path, prepared32):
    # what a process killed while older code claimed v0001 left: a folder and nothing in it
    spec = write_spec(tmp_path, "bare", "gan", prepared32, epochs=1, device="cpu")
    (tmp_path / "artifacts" / "bare" / "v0001").mkdir(parents=True)
    run_dir = run_job(spec, resume=True)  # nothing to resume: a new version, trained
    assert run_dir.name == "v0002" and json.loads((run_dir / "status.json").read_text())["state"] == "done"
    # and a finished job resumed again is finished, not retrained (a restart loop)
    again = cli("run", spec, "--resume")
    assert again.returncode == 0 and f"already finished in {run_dir}" in again.stderr
    assert sorted(p.name for p in (tmp_path / "artifacts" / "bare").glob("v*")) == ["v0001", "v0002"]


def test_a_version_appears_with_its_identity_or_not_at_all(tmp_path):
    # SIGKILL in the middle of writing a version's first files: no version is left behind
    root, ready = tmp_path / "job", tmp_path / "ready"
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom heartjobs.store.rundir import claim_version\n"
        "def fill(folder):\n    (folder / 'resolved.json').write_text('{}')\n"
        f"    Path({str(ready)!r}).touch()\n    time.sleep(120)\n"
        f"claim_version(Path({str(root)!r}), fill)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    wait_for(ready.exists, proc=proc)
    proc.kill()
    proc.wait()
    assert not list(root.glob("v*"))  # only a hidden staging folder, which no reader takes for a version
    # a claim after it gets v0001, with its files
    from heartjobs.store.rundir import claim_version

    claimed = claim_version(root, lambda folder: (folder / "resolved.json").write_text("{}"))
    assert claimed.name == "v0001" and sorted(p.name for p in claimed.iterdir()) == ["resolved.json"]


def test_a_version_another_process_holds_is_not_run_twice(tmp_path, prepared32):
    from heartjobs.system.locks import run_lock

    spec = write_spec(tmp_path, "held", "gan", prepared32, epochs=1, device="cpu")
    run_dir = tmp_path / "artifacts" / "held" / "v0001"
    run_dir.mkdir(parents=True)
    first = run_job(spec)  # v0002, done
    status = json.loads((first / "status.json").read_text())
    assert status["resumed"] == 0  # its own first record was no resume
    # an unfinished version whose process looks dead, but whose lock a live process holds (a resume still
    # starting up): a second resume is refused, not run alongside it
    (first / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    with run_lock(first):
        result = cli("run", spec, "--resume")
    assert result.returncode == 75 and "another process is running it; not running it twice" in result.stderr
    assert json.loads((first / "status.json").read_text())["state"] == "interrupted"  # untouched


def test_resuming_removes_what_a_killed_writer_left(tmp_path, prepared32):
    spec = write_spec(tmp_path, "litter", "gan", prepared32, epochs=1, device="cpu")
    run_dir = run_job(spec)
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    # what SIGKILL during atomic writes leaves: a partial checkpoint, a partial report, a staged folder
    litter = [run_dir / "checkpoints" / ".epoch_0002.pt.k3j1x.tmp", run_dir / ".fid.json.p0q9.tmp"]
    for path in litter:
        path.write_bytes(b"\0" * 1000)
    (run_dir / "eval_images.partial" / "real").mkdir(parents=True)
    result = cli("run", spec, "--resume")
    assert result.returncode == 0, result.stderr
    assert not any(p.exists() for p in litter) and not (run_dir / "eval_images.partial").exists()
    assert "removed checkpoints/.epoch_0002.pt.k3j1x.tmp, left by a killed process" in result.stderr
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["epoch_0001.pt"]


@pytest.mark.slow
def test_resume_leaves_an_older_unfinished_version_of_a_configuration_that_finished_since(tmp_path, prepared32):
    # a user stops their run; the queue runs the same configuration as a new version to the end; the
    # user's --resume must not train the configuration a second time
    spec = write_spec(tmp_path, "resume_me", "dcgan", prepared32, **SLOW)
    first = tmp_path / "artifacts" / "resume_me" / "v0001"
    proc = _start(spec)
    wait_for(lambda: (first / "checkpoints" / "epoch_0002.pt").exists(), proc=proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert json.loads((first / "status.json").read_text())["state"] == "interrupted"
    second = run_job(spec)
    result = cli("run", spec, "--resume")
    assert result.returncode == 0 and f"already finished in {second}" in result.stderr, result.stderr
    assert json.loads((first / "status.json").read_text())["state"] == "interrupted"  # left, not retrained


def test_a_run_trained_with_deferred_evaluation_is_measured_by_its_resume_without_training_again(tmp_path, prepared32):
    fid = {"n_generated": 16, "repeats": 1, "dims": 64, "weights": "untrained", "frd": False}
    spec = write_spec(tmp_path, "deferred", "gan", prepared32, eval=fid, epochs=2, batch_size=4, device="cpu")
    trained = cli("run", spec, "--defer-evaluation")
    assert trained.returncode == 0, trained.stderr
    run_dir = tmp_path / "artifacts" / "deferred" / "v0001"
    assert f"trained: {run_dir}; measure it with: heartjobs run {spec} --resume" in trained.stdout
    assert json.loads((run_dir / "status.json").read_text())["state"] == "trained"
    assert not (run_dir / "fid.json").exists() and (run_dir / "generator.pt").is_file()
    training = {p.name: p.stat().st_mtime_ns for p in [*run_dir.glob("checkpoints/*"), run_dir / "generator.pt"]}

    measured = cli("run", spec, "--resume")
    assert measured.returncode == 0, measured.stderr
    assert "finished training; measuring it" in measured.stderr and "epoch 1/2" not in measured.stderr
    assert {
        p.name: p.stat().st_mtime_ns for p in [*run_dir.glob("checkpoints/*"), run_dir / "generator.pt"]
    } == training
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["resumed"] == 0 and (run_dir / "fid.json").is_file()
    # a spec that is not measured has nothing to defer: done at once
    unmeasured = write_spec(tmp_path, "unmeasured", "gan", prepared32, epochs=1, batch_size=4, device="cpu")
    assert "done: " in cli("run", unmeasured, "--defer-evaluation").stdout
