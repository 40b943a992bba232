"""Faults the runner must survive, each reproduced for real: a disk that fills up (a real tmpfs, mounted for
the test: these tests need root, as CI has, and say so otherwise), damaged and hostile input, and stop
signals at the edges of a run and during a background checkpoint write. `heartjobs` runs in this process
(`cli`), a real SIGTERM included; a real subprocess where the process itself is at stake (a set cut under it,
which would kill it with SIGBUS). SIGKILL during a background write: tests/test_resume.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from heartjobs.runner.lifecycle import run_job
from heartjobs.store.checkpoint import list_checkpoints

from .conftest import cli, needs_root, one_line_error, write_spec


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mounted at tmp_path/disk; yields a function that sets its size in bytes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    try:
        yield disk, resize
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _spec_on(folder: Path, out: Path, prepared: Path, **train) -> Path:
    spec = write_spec(folder, "full", "gan", prepared, epochs=3, checkpoint_every=1, keep_checkpoints=3, **train)
    spec.write_text(spec.read_text().replace(f'root = "{folder / "artifacts"}"', f'root = "{out}"'))
    return spec


@needs_root
@pytest.mark.slow
def test_a_full_disk_fails_in_one_line_keeps_the_last_checkpoint_and_resumes_once_there_is_room(
    tmp_path, prepared32, small_disk
):
    disk, resize = small_disk
    # how large one checkpoint of this job is, measured on the real disk
    reference = run_job(_spec_on(tmp_path, tmp_path / "reference", prepared32, device="cpu"))
    size = list_checkpoints(reference / "checkpoints")[-1].stat().st_size
    spec = _spec_on(tmp_path, disk / "artifacts", prepared32, device="cpu")
    run_dir = disk / "artifacts" / "full" / "v0001"

    # room for two checkpoints and a bit: the third is refused before it is written
    resize(int(2.6 * size) + 2**20)
    result = cli("run", spec)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "no space left on the device" in error and "MiB free there" in error and "--resume" in error
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "no space left" in status["error"]
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert not list(run_dir.rglob(".*.tmp"))  # no partial file left

    # room for everything: the run resumes from its last checkpoint and finishes
    resize(8 * size + 8 * 2**20)
    resumed = cli("run", spec, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert [json.loads(line)["epoch"] for line in (run_dir / "losses.jsonl").read_text().splitlines()] == [1, 2, 3]


@needs_root
@pytest.mark.slow
def test_a_disk_that_fills_in_the_middle_of_a_write_leaves_no_partial_file(tmp_path, prepared32, small_disk):
    disk, resize = small_disk
    reference = run_job(_spec_on(tmp_path, tmp_path / "reference", prepared32, device="cpu"))
    size = list_checkpoints(reference / "checkpoints")[-1].stat().st_size
    resize(size // 2)  # not even the first checkpoint fits
    result = cli("run", _spec_on(tmp_path, disk / "artifacts", prepared32, device="cpu"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "no space left on the device" in result.stderr, result.stderr
    run_dir = disk / "artifacts" / "full" / "v0001"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    assert not list(run_dir.rglob(".*.tmp")) and list_checkpoints(run_dir / "checkpoints") == []


@needs_root
@pytest.mark.slow
def test_a_worker_survives_a_full_queue_folder_and_the_job_stays_recoverable(tmp_path, prepared32, small_disk):
    from heartjobs.queue.folders import Queue

    disk, resize = small_disk
    resize(4 * 2**20)
    queue = Queue(disk / "q")
    queue.add(write_spec(tmp_path, "cramped", "gan", prepared32, epochs=1, device="cpu"))
    with open(disk / "filler", "wb", buffering=0) as filler:  # fill the disk to the last byte
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    result = cli("worker", "--queue", queue.root, "--slot", "test-cramped")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "its record could not be written" in result.stderr and "left in running/" in result.stderr
    assert [e.name for e in queue.entries("running")] == ["cramped"]  # recoverable, not lost
    # once there is room, a worker recovers and finishes it
    (disk / "filler").unlink()
    for entry in queue.recover_stale(stale_after=0):
        assert entry.recovered == 1
    assert cli("worker", "--queue", queue.root, "--slot", "test-cramped").returncode == 0
    assert [e.name for e in queue.entries("done")] == ["cramped"]


# --- bad input: one line naming the file and field, exit 2, never a traceback ---


def test_a_damaged_prepared_set_is_a_one_line_error(tmp_path, prepared32):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(prepared32, broken)
    images = broken / "images.npy"
    images.write_bytes(images.read_bytes()[:200])  # truncated
    spec = write_spec(tmp_path, "damaged", "gan", broken, epochs=1, device="cpu")
    one_line_error(cli("run", spec), "images.npy: ")
    images.write_bytes(b"garbage, not numpy")
    one_line_error(cli("run", spec), "images.npy: unreadable")
    manifest = json.loads((prepared32 / "manifest.json").read_text())
    shutil.copy(prepared32 / "images.npy", images)
    for field, value in (("shape", None), ("count", "12")):
        (broken / "manifest.json").write_text(json.dumps({**manifest, field: value}))
        one_line_error(cli("data", "info", broken), f"manifest.json: {field}: expected")
        one_line_error(cli("run", spec), f"manifest.json: {field}: expected")


def test_a_spec_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    one_line_error(cli("validate", fifo), "fifo.toml: not a regular file")
    endless = tmp_path / "zero.toml"
    endless.symlink_to("/dev/zero")
    one_line_error(cli("validate", endless), "zero.toml: not a regular file")
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (2 << 20))
    one_line_error(cli("validate", huge), "huge.toml: larger than 1024 KiB")


def test_worker_poll_must_be_positive(tmp_path):
    result = cli("worker", "--queue", tmp_path / "q", "--poll", "-1")
    assert result.returncode == 2 and "--poll: must be > 0" in result.stderr and "Traceback" not in result.stderr


@needs_root
def test_a_read_only_queue_is_a_one_line_error(tmp_path, prepared32):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        spec = write_spec(tmp_path, "ro", "gan", prepared32, epochs=1, device="cpu")
        one_line_error(cli("enqueue", spec, "--queue", ro / "q"), f"--queue {ro / 'q'}: cannot add")
        one_line_error(cli("worker", "--queue", ro / "q"), f"--queue {ro / 'q'}: cannot use it as a queue")
        # artifacts where nothing can be written: the path and what the system said, in one line
        unwritable = write_spec(tmp_path, "ro_out", "gan", prepared32, epochs=1, device="cpu")
        unwritable.write_text(unwritable.read_text().replace(str(tmp_path / "artifacts"), str(ro / "artifacts")))
        one_line_error(cli("run", unwritable), f"{ro / 'artifacts'}", "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)


# --- signals at the edges of a run: a real SIGTERM, sent by the run to itself at the exact moment ---


def _run_signalled_at(spec: Path, where: str, monkeypatch) -> object:
    """`heartjobs run spec`, sending this process a real SIGTERM at `where`: "setup" (while the spec's weights
    are checked, before a version exists) or "done" (the instant status.json says done)."""
    import heartjobs.runner.lifecycle
    import heartjobs.store.status

    if where == "setup":
        checked = heartjobs.runner.lifecycle.check_measurable

        def check_measurable(*args, **kwargs):
            checked(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(heartjobs.runner.lifecycle, "check_measurable", check_measurable)
    else:
        finish = heartjobs.store.status.StatusFile.finish

        def finish_then_signal(self, state, error=None):
            finish(self, state, error)
            if state == "done":
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(heartjobs.store.status.StatusFile, "finish", finish_then_signal)
    return cli("run", spec)  # a SIGTERM that `run` did not take as a request would end the test process


def test_sigterm_during_setup_stops_before_a_version_is_claimed(tmp_path, prepared32, monkeypatch):
    spec = write_spec(tmp_path, "edge", "gan", prepared32, epochs=1, device="cpu")
    result = _run_signalled_at(spec, "setup", monkeypatch)
    assert result.returncode == 128 + 15, (result.returncode, result.stderr)  # a request, not a death
    assert "stopped by SIGTERM during setup, before a version was chosen" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "artifacts" / "edge").exists() or not list((tmp_path / "artifacts" / "edge").iterdir())


def test_sigterm_just_after_the_job_finished_exits_0(tmp_path, prepared32, monkeypatch):
    spec = write_spec(tmp_path, "edge", "gan", prepared32, epochs=1, device="cpu")
    result = _run_signalled_at(spec, "done", monkeypatch)
    assert result.returncode == 0, (result.returncode, result.stderr)  # before the fix: -15 after "done"
    assert "a stop signal came after the job had finished; nothing to stop" in result.stdout
    status = json.loads((tmp_path / "artifacts" / "edge" / "v0001" / "status.json").read_text())
    assert status["state"] == "done"


def test_a_stop_signal_waits_for_the_background_checkpoint_write_in_flight(tmp_path, prepared32, monkeypatch):
    # The background writer, about to write epoch_0001.pt, sends the process a real SIGTERM and holds that
    # write until the training thread hands over the stop's checkpoint: the stop arrives with a write in
    # flight, and the run must finish that write and then its own before it says it stopped.
    import heartjobs.store.checkpoint
    from heartjobs.spec.loading import load_spec
    from heartjobs.store.background import BackgroundWriter
    from heartjobs.store.checkpoint import load_checkpoint

    save, submit = heartjobs.store.checkpoint.save_checkpoint, BackgroundWriter.submit
    signalled, stop_handed_over, written = threading.Event(), threading.Event(), []

    def save_checkpoint(folder, state, spec_hash, keep):
        if state["epoch"] == 1 and state["position"] is None and not signalled.is_set():
            signalled.set()
            os.kill(os.getpid(), signal.SIGTERM)  # handled in the training thread: a stop request
            if not stop_handed_over.wait(timeout=120):
                raise AssertionError("nothing was handed to the writer after the SIGTERM")
        written.append(save(folder, state, spec_hash, keep))
        return written[-1]

    def submit_after_the_signal(self, write):
        if signalled.is_set():
            stop_handed_over.set()  # the write in flight may go on now; submit itself waits for it
        submit(self, write)

    monkeypatch.setattr(heartjobs.store.checkpoint, "save_checkpoint", save_checkpoint)
    monkeypatch.setattr(BackgroundWriter, "submit", submit_after_the_signal)
    spec = write_spec(tmp_path, "inflight", "gan", prepared32, epochs=3, checkpoint_every=1, device="cpu")
    result = cli("run", spec)
    assert result.returncode == 128 + signal.SIGTERM, (result.returncode, result.stderr)
    assert "stopped by SIGTERM" in result.stderr and "Traceback" not in result.stderr
    run_dir = tmp_path / "artifacts" / "inflight" / "v0001"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted"
    # the write in flight, then the stop's own (the same name when the stop came before the next batch)
    assert len(written) == 2 and written[0].name == "epoch_0001.pt", written
    assert f"checkpoint {written[1].name} written" in result.stderr + result.stdout
    spec_hash = load_spec(spec).spec_hash
    for path in written:  # on disk, whole, when the process said it stopped
        assert load_checkpoint(path, spec_hash)["epoch"] == status["epochs_done"] == 1
    assert not list(run_dir.rglob(".*.tmp"))


@pytest.mark.slow
def test_a_prepared_set_truncated_under_a_running_job_does_not_kill_it(tmp_path, prepared32):
    import shutil

    from .conftest import SLOW_DCGAN, wait_for

    data = tmp_path / "data"
    shutil.copytree(prepared32, data)
    eval_ = {"weights": "untrained", "dims": 64, "n_generated": 16, "repeats": 1, "frd": False}
    spec = write_spec(tmp_path, "cut", "dcgan", data, eval=eval_, **{**SLOW_DCGAN, "epochs": 6})
    run_dir = tmp_path / "artifacts" / "cut" / "v0001"
    proc = subprocess.Popen([sys.executable, "-m", "heartjobs", "run", str(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: list_checkpoints(run_dir / "checkpoints"), proc=proc)  # training, well under way
    with open(data / "images.npy", "r+b") as images:  # cut in place, as a rewrite of the set would
        images.truncate(256)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (proc.returncode, err)  # before: SIGBUS, status "running" forever
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert json.loads((run_dir / "fid.json").read_text())["n_real"] > 0
