"""Atomic writes: all or nothing, and the usual permissions (other users and containers can read)."""

from __future__ import annotations

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
