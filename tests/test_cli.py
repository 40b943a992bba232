"""The `heartjobs` command as a user runs it: the installed entry point and an error's exit code through a
real process, the rest in this process (`cli`): exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from heartjobs import __version__

from .conftest import cli, run_cli


def test_the_installed_command_runs_and_its_exit_code_reaches_the_shell(tmp_path):
    command = Path(sys.executable).parent / "heartjobs"  # the console script pip installed beside this Python
    result = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and __version__ in result.stdout
    missing = subprocess.run(["sh", "-c", f"'{command}' data info '{tmp_path / 'nothing'}'; echo \"exit $?\""],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.stdout.strip() == "exit 2" and len(missing.stderr.strip().splitlines()) == 1


def test_phantom_command_writes_slices_manifest_and_contact_sheet(tmp_path):
    out = tmp_path / "data" / "phantom"
    result = cli("data", "phantom", "--out", out, "--slices", "4", "--size", "64", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "4 slices 64x64" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json"] + [f"slice_{i:05d}.jp2" for i in range(4)]
    assert json.loads((out / "manifest.json").read_text())["parameters"]["seed"] == 3
    assert (tmp_path / "data" / "phantom_contact_sheet.png").is_file()
    again = cli("data", "phantom", "--out", out, "--slices", "4", "--size", "64", "--seed", "3")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_phantom_bad_arguments_are_one_line_errors(tmp_path):
    result = cli("data", "phantom", "--out", tmp_path / "p", "--size", "8")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: phantom: --size must be >= 16, got 8"]
    assert not (tmp_path / "p").exists()


def test_a_count_or_size_that_is_no_number_names_the_option_and_the_text():
    for args, message in (
        (("worker", "--overlap", "abc"), "argument --overlap: a whole number >= 0, got 'abc'"),
        (("worker", "--overlap", "-1"), "argument --overlap: must be >= 0, got -1"),
        (("evaluate", "run", "--n", "2.5"), "argument --n: a whole number >= 1, got '2.5'"),
        (("worker", "--poll", "soon"), "argument --poll: a number > 0, got 'soon'"),
    ):
        result = cli(*args)
        assert result.returncode == 2, args
        assert result.stderr.strip().splitlines()[-1].endswith(f"error: {message}"), result.stderr


def test_info_on_a_missing_set_is_a_one_line_error(tmp_path):
    result = cli("data", "info", tmp_path / "nothing")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing" in lines[0] and "heartjobs data prepare" in lines[0]


def test_debug_prints_the_traceback_with_its_cause_and_still_ends_with_the_one_line_error(tmp_path):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))  # not UTF-8: the error hides a UnicodeDecodeError
    expected = f"error: {spec}: not a UTF-8 text file (TOML must be UTF-8)"
    plain = run_cli("show", spec)  # a real process: nothing but the one line on its stderr, exit 2
    assert plain.returncode == 2 and plain.stderr.strip().splitlines() == [expected]
    for result in (cli("--debug", "show", spec), cli("show", spec, env={"HEARTJOBS_DEBUG": "1"})):
        assert result.returncode == 2
        assert "Traceback" in result.stderr and "UnicodeDecodeError" in result.stderr  # the cause, kept
        assert result.stderr.strip().splitlines()[-1] == expected


def test_paths_that_look_like_markup_print_as_they_are(tmp_path, prepared32):
    # rich would read "[x]" as a style (and drop it) and "[/x]" as a closing tag (and raise MarkupError)
    from .conftest import write_spec

    folder = tmp_path / "jobs" / "[x]"
    folder.mkdir(parents=True)
    spec = write_spec(folder, "a", "gan", prepared32, epochs=1, device="cpu")
    queued = cli("enqueue", spec, "--queue", tmp_path / "q")
    assert queued.returncode == 0, queued.stderr
    assert f"queued {spec} -> " in queued.stdout and "[x]/a.toml" in queued.stdout
    closing = tmp_path / "[" / "x]" / "missing.toml"  # a path holding "[/x]"
    refused = cli("show", closing)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "MarkupError" not in refused.stderr
    assert refused.stderr.startswith(f"error: {closing}: ") and len(refused.stderr.strip().splitlines()) == 1


def test_every_command_and_option_says_what_it_is_and_the_exit_codes_are_listed():
    import argparse

    from heartjobs.cli.main import build_parser

    parser = build_parser()
    silent = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                silent.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(parser, "heartjobs")
    assert not silent, silent
    shown = cli("--help")
    assert shown.returncode == 0 and "examples:" in shown.stdout
    for code in ("  2 ", "  75 ", "128+N", "  130 "):
        assert code in shown.stdout, code
    # the measuring command is named for what it measures; `fid` stays the same command
    assert cli("evaluate", "--help").stdout == cli("fid", "--help").stdout and "FRD" in shown.stdout
