"""The wheelhouse's refusals, before any download or install: a weights file that is not the standard
one, a target Python given wrong; the offline install's checks of what it was handed: a file that differs
from SHA256SUMS, a wheelhouse built for another Python, a folder that is no wheelhouse. (The whole build
and offline install run for real in `make wheelhouse-test`, in CI.)"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _wheelhouse(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _install(folder: Path, *args: str) -> subprocess.CompletedProcess:
    command = ["bash", str(ROOT / "scripts" / "install.sh"), "--offline", str(folder), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder.parent)


def _fake_wheelhouse(folder: Path, python_version: str) -> Path:
    folder.mkdir()
    (folder / "pkg-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    digest = hashlib.sha256(b"not really a wheel").hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  pkg-1.0-py3-none-any.whl\n")
    (folder / "manifest.json").write_text(json.dumps({"python_version": python_version, "install": []}))
    return folder


def test_a_weights_file_that_is_not_the_standard_one_is_refused_before_any_download(tmp_path):
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"some other network")
    result = _wheelhouse("--out", str(tmp_path / "wheelhouse"), "--fid-weights", str(weights))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"--fid-weights {weights}: sha256 " in result.stderr and "is not the standard" in result.stderr
    assert not (tmp_path / "wheelhouse").exists() and list(tmp_path.iterdir()) == [weights]

    missing = _wheelhouse("--out", str(tmp_path / "wheelhouse"), "--fid-weights", str(tmp_path / "nope.pth"))
    assert missing.returncode == 2 and "nope.pth: no such file" in missing.stderr
    other = tmp_path / "photos"  # an existing folder that is not a wheelhouse is never replaced
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = _wheelhouse("--out", str(other))
    assert refused.returncode == 2 and "exists and is not a wheelhouse" in refused.stderr, refused.stderr
    assert (other / "keep.txt").read_text() == "mine"
    bad_version = _wheelhouse("--python-version", "3")
    assert bad_version.returncode == 2 and "give major.minor" in bad_version.stderr


def test_the_offline_install_refuses_a_changed_file_another_python_and_a_folder_that_is_no_wheelhouse(tmp_path):
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = ["--python", sys.executable, "--venv", str(tmp_path / "venv")]

    damaged = _fake_wheelhouse(tmp_path / "damaged", here)
    (damaged / "pkg-1.0-py3-none-any.whl").write_bytes(b"not really a wheel, changed")
    result = _install(damaged, *python)
    assert result.returncode == 2 and "pkg-1.0-py3-none-any.whl: FAILED" in result.stderr, result.stderr
    assert "differs from its SHA256SUMS" in result.stderr

    other = _fake_wheelhouse(tmp_path / "other", "3.99")
    result = _install(other, *python)
    assert result.returncode == 2, result.stderr
    assert f"was built for Python 3.99, {sys.executable} is {here}" in result.stderr

    plain = tmp_path / "plain"
    plain.mkdir()
    result = _install(plain, *python)
    assert result.returncode == 2 and "no manifest.json and SHA256SUMS here" in result.stderr
    assert not (tmp_path / "venv").exists()  # nothing was made
