"""Lock files on shared machines (issue 28, item 1): a lock never follows a link nor changes the mode of a
file that is not its own, and a lock folder another user could have prepared is refused in one line."""

from __future__ import annotations

import os
import stat

import pytest

from heartjobs.errors import HeartjobsError
from heartjobs.system import locks

from .conftest import needs_root


def test_a_planted_link_in_the_lock_folder_is_refused_and_its_target_untouched(tmp_path, monkeypatch):
    folder = tmp_path / "locks"
    folder.mkdir()
    folder.chmod(0o1777)  # as heartjobs makes it: open to every user, sticky
    monkeypatch.setenv(locks.LOCK_DIR_ENV, str(folder))
    target = tmp_path / "precious"
    target.write_text("root's own\n")
    target.chmod(0o600)
    (folder / "cpu.lock").symlink_to(target)
    refused = r"cpu\.lock: a symbolic link where a lock file belongs; refusing"
    with pytest.raises(HeartjobsError, match=refused), locks.device_lock("cpu"):
        pass
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "root's own\n"
    (folder / "cpu.lock").unlink()
    with locks.device_lock("cpu") as held:  # its own lock file: made, shared with every uid, held
        assert held and stat.S_IMODE((folder / "cpu.lock").stat().st_mode) == 0o666


def test_a_run_or_configuration_lock_that_is_a_link_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    run = tmp_path / "v0001"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(HeartjobsError, match="a symbolic link where a lock file belongs"), locks.run_lock(run):
        pass


def test_a_lock_folder_writable_by_others_without_the_sticky_bit_or_a_link_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    monkeypatch.setenv(locks.LOCK_DIR_ENV, str(folder))
    with pytest.raises(HeartjobsError, match="open: the lock folder is writable by others without the sticky bit"):
        locks.lock_dir()
    linked = tmp_path / "linked"
    linked.symlink_to(folder)
    monkeypatch.setenv(locks.LOCK_DIR_ENV, str(linked))
    with pytest.raises(HeartjobsError, match="linked: the lock folder is a symbolic link or not a folder"):
        locks.lock_dir()


@needs_root
def test_a_lock_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "theirs"
    folder.mkdir()
    folder.chmod(0o1777)
    os.chown(folder, 4242, 4242)
    monkeypatch.setenv(locks.LOCK_DIR_ENV, str(folder))
    with pytest.raises(HeartjobsError, match=r"theirs: the lock folder belongs to another user \(uid 4242\)"):
        locks.lock_dir()
