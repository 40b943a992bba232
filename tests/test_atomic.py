"""Atomic writes: all or nothing, and the usual permissions (other users and containers can read)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from heartjobs import atomic


def test_files_and_staged_folders_get_the_permissions_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        with atomic.staged_dir(tmp_path / "set") as folder:
            (folder / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "set").stat().st_mode) == 0o755
    assert atomic.read_json(tmp_path / "a.json") == {"x": 1}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"old": True})
    with pytest.raises(RuntimeError), atomic.replacing(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert atomic.read_json(tmp_path / "a.json") == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with pytest.raises(RuntimeError), atomic.staged_dir(tmp_path / "set"):
        raise RuntimeError("crash while building")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_an_append_after_a_line_cut_by_a_crash_starts_on_a_fresh_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    atomic.append_lines(log, [json.dumps({"n": 1})])
    with open(log, "a") as f:
        f.write('{"n": 2, "fid')  # what a crash in the middle of an append leaves
    atomic.append_lines(log, [json.dumps({"n": 3}), json.dumps({"n": 4})])
    lines = log.read_text().splitlines()
    assert lines[0] == '{"n": 1}' and lines[1] == '{"n": 2, "fid'
    assert [json.loads(line) for line in lines[2:]] == [{"n": 3}, {"n": 4}]  # whole, and readable
    # on a fresh file, and after a whole last line, nothing is added in between
    atomic.append_lines(tmp_path / "new.jsonl", ["a"])
    atomic.append_lines(tmp_path / "new.jsonl", ["b"])
    assert (tmp_path / "new.jsonl").read_text() == "a\nb\n"


def test_the_umask_is_read_without_being_set(monkeypatch):
    # setting it to 0 and back (os.umask's only way to read it) races every other thread's file creation
    old = os.umask(0o027)
    try:

        def must_not_set(mask):
            raise AssertionError(f"os.umask({mask:o}) called")

        monkeypatch.setattr(os, "umask", must_not_set)
        assert atomic._umask() == 0o027
        monkeypatch.undo()
    finally:
        os.umask(old)
