"""What held when issue 28's adversarial probe tried to break heartjobs, kept so: pickles never run, hostile
spec files and names are one line each, hostile queue entries fail alone, evaluation output never lands in a
folder that holds something, and a cache that cannot be written stops a job before it claims a version.
At the end, links planted in a queue or a run folder from elsewhere, which a resume, a measurement or a
worker must not write through.

Every case runs the real command (in this process) and checks the exit code, the one line and what was, or
was not, written. The nineteen cases the probe broke are in the tests/test_hostile_*.py files beside this one
(cluster, report, spec, folders, inputs); tests/test_locks.py holds the lock files'. What heartjobs trusts and
what it does not: docs/security.md."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from heartjobs.queue.folders import Queue
from heartjobs.store.rundir import versions

from .conftest import cli, made_once, one_line_error, write_spec

QUICK = {"epochs": 1, "batch_size": 4, "device": "cpu", "checkpoint_every": 1}
FID = ("--weights", "untrained", "--dims", "64", "--n", "8", "--repeats", "1", "--no-frd")


class _Payload:
    """Unpickling this creates the marker file: what a crafted pickle could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _write_payload(path: Path, marker: Path, how: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "torch zip":
        torch.save({"state_dict": _Payload(marker)}, path)
    elif how == "torch legacy":
        torch.save({"state_dict": _Payload(marker)}, path, _use_new_zipfile_serialization=False)
    else:  # "pickle": a plain pickle whose top-level object is the payload
        path.write_bytes(pickle.dumps(_Payload(marker)))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, prepared32) -> Path:
    """A one-epoch GAN run with a checkpoint (treat as read-only: tests copy it)."""
    from heartjobs.runner.lifecycle import run_job

    def make(folder: Path) -> Path:
        return run_job(write_spec(folder, "hostile", "gan", prepared32, **QUICK))

    return made_once(tmp_path_factory, "hostile_run", make)


def _copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "artifacts" / "hostile" / run.name
    shutil.copytree(run, copy, symlinks=True)
    return copy


@pytest.mark.parametrize("how", ["torch zip", "torch legacy", "pickle"])
def test_no_pickle_payload_runs_wherever_heartjobs_loads_a_file(tmp_path, finished_run, prepared32, how):
    marker = tmp_path / "pwned"
    run = _copy_of(finished_run, tmp_path)
    spec = write_spec(tmp_path, "hostile", "gan", prepared32, **QUICK)

    _write_payload(run / "generator.pt", marker, how)  # as the run's generator
    one_line_error(cli("evaluate", run, *FID), "generator.pt")

    planted = _write_payload(tmp_path / "elsewhere" / "epoch_0001.pt", marker, how)  # as --checkpoint
    one_line_error(cli("evaluate", run, "--checkpoint", planted, *FID), "epoch_0001.pt")

    weights = _write_payload(tmp_path / "weights.pt", marker, how)  # as the Inception weights
    result = cli("evaluate", _copy_of(finished_run, tmp_path / "again"), *FID[2:], "--weights", weights)
    one_line_error(result, "weights.pt")

    (checkpoint,) = (run / "checkpoints").iterdir()  # as the checkpoint a resume continues from
    _write_payload(checkpoint, marker, how)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "failed"}))
    one_line_error(cli("run", spec, "--resume"), checkpoint.name)

    assert not marker.exists()


SPEC_FILES = {
    "a folder": lambda p: p.mkdir(),
    "a FIFO": lambda p: os.mkfifo(p),
    "a link to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "a dangling link": lambda p: p.symlink_to(p.with_name("nowhere.toml")),
    "over 1 MiB": lambda p: p.write_bytes(b"#" * (1 << 20) + b"\n#"),
    "binary": lambda p: p.write_bytes(bytes(range(256))),
    "UTF-16": lambda p: p.write_text('name = "x"\nmodel = "gan"\n', encoding="utf-16"),
    "a byte-order mark": lambda p: p.write_bytes(b'\xef\xbb\xbfname = "x"\nmodel = "gan"\n'),
    "a duplicate key": lambda p: p.write_text('name = "x"\nname = "y"\nmodel = "gan"\n'),
}


@pytest.mark.parametrize("kind", list(SPEC_FILES))
def test_a_spec_file_that_is_not_a_spec_is_one_line_naming_it(tmp_path, kind):
    path = tmp_path / "job.toml"
    SPEC_FILES[kind](path)
    for command in (("validate",), ("show",), ("enqueue", "--queue", tmp_path / "q")):
        one_line_error(cli(*command, path), "job.toml")
    assert not (tmp_path / "q").exists() or not any(Queue(tmp_path / "q").entries("pending"))


@pytest.mark.parametrize("name", ["../up", "a/b", "two\nlines", "nul\x00", "<img src=x onerror=alert(1)>", ".."])
def test_a_job_name_that_could_leave_its_folder_or_mark_up_a_page_is_refused(tmp_path, prepared32, name):
    spec = write_spec(tmp_path, "named", "gan", prepared32, **QUICK)
    text = spec.read_text().replace('name = "named"', f"name = {json.dumps(name)}")
    spec.write_text(text)
    one_line_error(cli("validate", spec), "named.toml", "name")
    one_line_error(cli("run", spec), "named.toml", "name")
    assert not (tmp_path / "artifacts").exists()


ENTRIES = {
    "a link to /etc/passwd": lambda p: p.symlink_to("/etc/passwd"),
    "huge": lambda p: p.write_bytes(b"#" * (2 << 20)),
    "a folder": lambda p: p.mkdir(),
    "a FIFO": lambda p: os.mkfifo(p),
    "garbage": lambda p: p.write_bytes(b"\x00\xff not toml [[["),
}


def test_hostile_queue_entries_fail_alone_and_the_worker_runs_the_good_job(tmp_path, prepared32):
    queue = Queue(tmp_path / "q")
    for kind in ENTRIES:  # queued as good specs, then swapped for what a hostile user can drop in pending/
        queue.add(write_spec(tmp_path, kind.replace(" ", "_").replace("/", "_"), "gan", prepared32, **QUICK))
    swapped = [e.path for e in queue.entries("pending")]
    for path, make in zip(swapped, ENTRIES.values(), strict=True):
        path.unlink()
        make(path)
    queue.add(write_spec(tmp_path, "good", "gan", prepared32, **QUICK))

    result = cli("worker", "--queue", queue.root, "--until-empty", "--slot", "test-hostile")
    assert "Traceback" not in result.stderr, result.stderr
    assert [e.name for e in queue.entries("done")] == ["good"]
    assert len(queue.entries("failed")) == len(ENTRIES) and not queue.entries("pending")
    assert versions(tmp_path / "artifacts" / "good") and Path("/etc/passwd").stat().st_size > 0
    status = cli("queue", "status", "--queue", queue.root)
    assert status.returncode == 0 and "Traceback" not in status.stderr


def test_save_images_never_writes_into_a_folder_that_holds_something(tmp_path, finished_run):
    run = _copy_of(finished_run, tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.png").write_bytes(b"keep")
    one_line_error(cli("evaluate", run, *FID, "--save-images", taken), "--save-images", "not an empty folder")
    assert [p.name for p in taken.iterdir()] == ["mine.png"] and (taken / "mine.png").read_bytes() == b"keep"
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    one_line_error(cli("evaluate", run, *FID, "--save-images", a_file), "--save-images")
    assert a_file.read_text() == "keep"


# the cache holds the untrained weights and real statistics; TORCH_HOME, the standard weights (no network here)
CACHES = {"HEARTJOBS_CACHE": ("untrained", "a_file"), "TORCH_HOME": ("standard", "eval.weights")}


@pytest.mark.parametrize("variable", list(CACHES))
def test_a_cache_that_cannot_be_written_stops_the_job_before_it_claims_a_version(tmp_path, prepared32, variable):
    weights, named = CACHES[variable]
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    small = {"measure": True, "weights": weights, "dims": 64, "n_generated": 8, "repeats": 1, "frd": False}
    spec = write_spec(tmp_path, "cached", "gan", prepared32, eval=small, **QUICK)
    one_line_error(
        cli("run", spec, env={variable: blocked / "cache"}), "cached.toml" if weights == "standard" else "", named
    )
    assert not versions(tmp_path / "artifacts" / "cached")


# Links planted inside a queue or a run folder from elsewhere: never written through (no fix before this file)


def test_a_queue_log_that_is_a_link_fails_its_job_alone_and_its_target_is_untouched(tmp_path, prepared32):
    target = tmp_path / "roots_file"
    target.write_text("keep")
    queue = Queue(tmp_path / "q")
    queue.add(write_spec(tmp_path, "linked", "gan", prepared32, **QUICK))
    queue.add(write_spec(tmp_path, "good", "gan", prepared32, **QUICK))
    first = queue.entries("pending")[0]
    first.sidecar("log").symlink_to(target)  # "an earlier attempt's log": it travels into running/ with the job
    result = cli("worker", "--queue", queue.root, "--until-empty", "--slot", "test-hostile-log")
    assert "Traceback" not in result.stderr and "a symbolic link where heartjobs appends to a log" in result.stderr
    assert [e.name for e in queue.entries("done")] == ["good"] and [e.name for e in queue.entries("failed")] == [
        "linked"
    ]
    assert target.read_text() == "keep"


@pytest.mark.parametrize("planted", ["losses.jsonl", "metrics.jsonl", "checkpoints"])
def test_a_link_inside_a_run_folder_from_elsewhere_is_refused_before_a_resume_or_a_measurement(
    tmp_path, finished_run, prepared32, planted
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "file").write_text("keep")
    run = _copy_of(finished_run, tmp_path)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "failed"}))
    link = run / planted
    if link.is_dir():
        shutil.rmtree(link)
    link.unlink(missing_ok=True)
    link.symlink_to(elsewhere if planted == "checkpoints" else elsewhere / "file")
    spec = write_spec(tmp_path, "hostile", "gan", prepared32, **QUICK)
    one_line_error(cli("run", spec, "--resume"), str(link), "a symbolic link inside a run folder")
    one_line_error(cli("evaluate", run, *FID), str(link), "a symbolic link inside a run folder")
    assert [p.name for p in elsewhere.iterdir()] == ["file"] and (elsewhere / "file").read_text() == "keep"


@pytest.mark.parametrize("extra", [(), ("--all-checkpoints",)])
def test_an_evaluate_option_out_of_a_specs_bounds_is_one_line_naming_the_option(tmp_path, finished_run, extra):
    run = _copy_of(finished_run, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    line = one_line_error(cli("evaluate", run, *FID[:6], "--n", 2**40, *extra), "--n:", "less than or equal")
    assert "n_generated" not in line and sorted(p.name for p in run.iterdir()) == before
