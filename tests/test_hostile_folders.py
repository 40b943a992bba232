"""Files and folders that are not what they seem (issue 28, items 7, 13 and 14): a queued file's name reaches
the queue and back whatever it is (a newline, `job.r7`, a '%'), so `enqueue`, `queue status` and the worker
agree on it; a `vNNNN` that is a link (dangling or not) or a `latest` that is a real folder is refused in
one line naming it, before any version is claimed, and nothing is written through the link or left behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from heartjobs.queue.folders import MAX_NAME_BYTES, Queue, spell, unspell

from .conftest import cli, one_line_error, write_spec

QUICK = {"epochs": 1, "batch_size": 4, "device": "cpu"}


def _spec_file(tmp_path: Path, job: str, file_name: str, prepared: Path) -> Path:
    """Job `job`'s spec in a file called `file_name` (the file's name, not the job's, is what the queue
    names its entry after)."""
    return write_spec(tmp_path, job, "gan", prepared, **QUICK).rename(tmp_path / file_name)


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time: to show that nothing changed."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


# --- item 7: queue entry names ---


@pytest.mark.parametrize(
    "name", ["job.r7", "job.r7.r1", "job\nwith-newline", "100%41", "a\x1b[31mred", "bytes\udcff", ".toml", "é t"]
)
def test_a_queue_entry_reads_back_the_users_file_name_and_no_recovery_count(tmp_path, name):
    spec = tmp_path / f"{name}.toml"
    spec.write_text("")  # Queue.add copies; what the spec says is `enqueue`'s check, not the queue's
    queue = Queue(tmp_path / "q")
    queue.add(spec)
    [entry] = queue.entries("pending")
    assert (entry.name, entry.recovered) == (name, 0) and unspell(spell(name)) == name
    assert entry.spelled.isprintable() and "\n" not in entry.path.name
    again = queue.requeue(queue.claim())  # a worker died: it comes back recovered once, same name
    assert (again.name, again.recovered) == (name, 1)


def test_a_job_file_named_like_a_recovered_entry_or_with_a_newline_is_listed_and_run_fresh(tmp_path, prepared32):
    # one job in two files: the worker runs the first fresh (one child, to keep this fast) and sees the second
    queue = tmp_path / "q"
    lookalike = _spec_file(tmp_path, "j", "job.r7.toml", prepared32)
    newline = tmp_path / "job\nwith-newline.toml"
    newline.write_bytes(lookalike.read_bytes())
    assert cli("enqueue", lookalike, newline, "--queue", queue).returncode == 0

    pending = Queue(queue).entries("pending")
    assert [(e.name, e.recovered) for e in pending] == [("job.r7", 0), ("job\nwith-newline", 0)]
    status = cli("queue", "status", "--queue", queue)
    assert status.returncode == 0
    assert "000001_job%2Er7.toml" in status.stdout and "000002_job%0Awith-newline.toml" in status.stdout

    worker = cli("worker", "--queue", queue, "--until-empty", "--slot", "test-hostile-names")
    assert worker.returncode == 0, worker.stderr
    assert "worker: 1 done, 0 failed, 1 skipped" in worker.stdout
    assert "job%2Er7: running" in worker.stderr and "resuming" not in worker.stderr
    assert os.listdir(queue / "pending") == os.listdir(queue / "running") == os.listdir(queue / "failed") == []
    done = Queue(queue).entries("done")
    assert [e.name for e in done] == ["job.r7", "job\nwith-newline"]
    outcomes = [json.loads(e.sidecar("json").read_text())["state"] for e in done]
    assert outcomes == ["done", "skipped"]  # the second: already finished by the first
    status = json.loads((tmp_path / "artifacts" / "j" / "v0001" / "status.json").read_text())
    assert status["state"] == "done" and status["resumed"] == 0  # a fresh run, its whole retry budget left


def test_a_file_name_too_long_for_a_queue_entry_is_refused_in_one_line_and_the_others_queued(tmp_path, prepared32):
    long_name = "x" * (MAX_NAME_BYTES + 1)
    too_long = _spec_file(tmp_path, "long", f"{long_name}.toml", prepared32)
    fine = write_spec(tmp_path, "fine", "gan", prepared32, **QUICK)
    result = cli("enqueue", too_long, fine, "--queue", tmp_path / "q")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    refused, verdict = result.stderr.strip().splitlines()
    assert long_name in refused and "file name too long for a queue entry" in refused
    assert verdict == "error: 1 of 2 specs refused; the others are queued"
    assert [e.name for e in Queue(tmp_path / "q").entries("pending")] == ["fine"]


# --- items 13 and 14: version folders and `latest` ---


def test_a_dangling_version_link_is_refused_by_name_and_nothing_is_claimed(tmp_path, prepared32):
    spec = write_spec(tmp_path, "j", "gan", prepared32, **QUICK)
    root = tmp_path / "artifacts" / "j"
    root.mkdir(parents=True)
    (root / "v0001").symlink_to(tmp_path / "gone")
    before = sorted(os.listdir(root))
    one_line_error(cli("run", spec), f"{root / 'v0001'}: a dangling symbolic link where a version folder belongs")
    assert sorted(p for p in os.listdir(root) if not p.startswith(".config-")) == before  # no version, no litter
    assert not (tmp_path / "gone").exists()
    (root / "v0001").unlink()  # what the error says to do: the job runs again
    assert cli("run", spec).returncode == 0 and (root / "v0001" / "generator.pt").is_file()


def test_resume_refuses_a_version_that_links_elsewhere_and_writes_nothing_there(tmp_path, prepared32):
    spec = write_spec(tmp_path, "j", "gan", prepared32, **QUICK)
    assert cli("run", spec).returncode == 0
    root = tmp_path / "artifacts" / "j"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "v0001").rename(elsewhere / "v0001")
    (root / "v0001").symlink_to(elsewhere / "v0001")
    status = elsewhere / "v0001" / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "state": "failed"}))  # resumable, were it ours
    (elsewhere / "v0001" / "generator.pt").unlink()
    untouched = _tree(elsewhere)
    for args in (("--resume",), ()):
        one_line_error(cli("run", spec, *args), f"{root / 'v0001'}: a symbolic link where a version folder belongs")
    assert _tree(elsewhere) == untouched
    assert sorted(p for p in os.listdir(root) if not p.startswith(".config-")) == ["latest", "v0001"]


def test_a_latest_that_is_a_folder_is_refused_by_name_before_a_version_is_claimed(tmp_path, prepared32):
    spec = write_spec(tmp_path, "j", "gan", prepared32, **QUICK)
    root = tmp_path / "artifacts" / "j"
    (root / "latest").mkdir(parents=True)
    (root / "latest" / "notes.txt").write_text("mine\n")
    for args in ((), ("--resume",)):
        one_line_error(cli("run", spec, *args), f"{root / 'latest'}: a folder where heartjobs keeps its link")
    assert sorted(p for p in os.listdir(root) if not p.startswith(".config-")) == ["latest"]  # no v0001, no .latest.N
    assert os.listdir(root / "latest") == ["notes.txt"]
