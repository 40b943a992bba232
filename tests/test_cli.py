"""The `heartjobs` command as a user runs it: real subprocesses, exit codes and messages."""

from __future__ import annotations

import json

from heartjobs import __version__

from .conftest import run_cli


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_phantom_command_writes_slices_manifest_and_contact_sheet(tmp_path):
    out = tmp_path / "data" / "phantom"
    result = run_cli("data", "phantom", "--out", out, "--slices", "4", "--size", "64", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "4 slices 64x64" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json"] + [f"slice_{i:05d}.jp2" for i in range(4)]
    assert json.loads((out / "manifest.json").read_text())["parameters"]["seed"] == 3
    assert (tmp_path / "data" / "phantom_contact_sheet.png").is_file()
    again = run_cli("data", "phantom", "--out", out, "--slices", "4", "--size", "64", "--seed", "3")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_phantom_bad_arguments_are_one_line_errors(tmp_path):
    result = run_cli("data", "phantom", "--out", tmp_path / "p", "--size", "8")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: phantom: --size must be >= 16, got 8"]
    assert not (tmp_path / "p").exists()


def test_info_on_a_missing_set_is_a_one_line_error(tmp_path):
    result = run_cli("data", "info", tmp_path / "nothing")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing" in lines[0] and "heartjobs data prepare" in lines[0]


def test_debug_prints_the_traceback_with_its_cause_and_still_ends_with_the_one_line_error(tmp_path):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))  # not UTF-8: the error hides a UnicodeDecodeError
    expected = f"error: {spec}: not a UTF-8 text file (TOML must be UTF-8)"
    plain = run_cli("show", spec)
    assert plain.returncode == 2 and plain.stderr.strip().splitlines() == [expected]
    for result in (run_cli("--debug", "show", spec), run_cli("show", spec, env={"HEARTJOBS_DEBUG": "1"})):
        assert result.returncode == 2
        assert "Traceback" in result.stderr and "UnicodeDecodeError" in result.stderr  # the cause, kept
        assert result.stderr.strip().splitlines()[-1] == expected
