"""Shared fixtures and helpers: a small real phantom (JPEG 2000 on disk), the CLI in this process and as
a real subprocess, job spec files, waiting for a condition, the one reference run of the signal tests made
once per session (also across pytest-xdist's workers), and comparing a resumed run with an uninterrupted one.

Every process of the suite computes with one torch thread: the test process (each xdist worker) here, and
every child through OMP_NUM_THREADS, which `heartjobs run` honours. A run made in one process and its
resumed twin made in another then do the same arithmetic, bit for bit, and two xdist workers fill the
two cores of a CI machine without oversubscribing them."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported: children inherit it

import pytest  # noqa: E402
import torch  # noqa: E402

from heartjobs.data.phantom import PhantomParams, generate  # noqa: E402

torch.set_num_threads(1)

SMALL_PHANTOM = PhantomParams(slices=12, size=128, seed=7)

# Mounting a tmpfs, acting as another user: root's alone. CI runs the suite as root; elsewhere these skip
# with this reason rather than fail on a permission.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts a tmpfs or acts as another uid)")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A 12-slice 128 px phantom, generated once per test session (treat as read-only)."""

    def make(folder: Path) -> Path:
        generate(folder / "phantom", SMALL_PHANTOM, workers=1)
        return folder / "phantom"

    return made_once(tmp_path_factory, "phantom", make)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m heartjobs ARGS` as a real subprocess (extra environment variables in `env`): for what
    only a real process shows (a signal, a kill, the entry point, an exit code through the OS). Everything
    else calls `cli` (in this process)."""
    return subprocess.run(
        [sys.executable, "-m", "heartjobs", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@dataclass
class CliResult:
    """What `cli` returns: the fields of subprocess.CompletedProcess the tests read."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args, cwd: Path | None = None, env: dict | None = None) -> CliResult:
    """`heartjobs ARGS` in this process: heartjobs.cli.main.main, its exit code and what a real process would have
    printed: what it wrote to sys.stdout and sys.stderr, what anything wrote to file descriptors 1 and 2
    meanwhile (C libraries, processes it started), and the warnings Python's default filters show.
    argparse's own exits count. `env` (values; None removes a variable), `cwd` and sys.argv hold for the
    call only; the stop signals' handlers and torch's thread count, which `run`, `fid` and `ladder` set for
    their process, are put back afterwards."""
    from heartjobs.cli.main import main
    from heartjobs.evaluation import preflight
    from heartjobs.system.stopping import STOP_SIGNALS

    preflight._downloadable.cache_clear()  # a fresh process asks the network again
    stdout, stderr = io.StringIO(), io.StringIO()
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    threads, saved_env, saved_cwd, saved_argv = torch.get_num_threads(), dict(os.environ), Path.cwd(), sys.argv
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = ["heartjobs", *map(str, args)]
        with _file_descriptors_to(stdout, stderr), warnings.catch_warnings(record=True) as shown:
            _python_default_warning_filters()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    code = main([str(a) for a in args])
                except SystemExit as exit_:  # argparse: --help, --version, a bad option
                    code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
            for w in shown:
                stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def _python_default_warning_filters() -> None:
    """The filters a Python process starts with (no -W, no dev mode): pytest's own show everything."""
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__", append=True)
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)


@contextlib.contextmanager
def _file_descriptors_to(stdout: io.StringIO, stderr: io.StringIO):
    """File descriptors 1 and 2 into temporary files meanwhile, then their text appended to stdout and
    stderr (as pytest's capfd does)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for file, text in ((out, stdout), (err, stderr)):
                file.seek(0)
                text.write(file.read().decode(errors="replace"))


_COUNT_LINE = re.compile(r"error: \d+ of \d+ specs ")  # what validate, enqueue, submit, data needs add


def one_line_error(result: CliResult | subprocess.CompletedProcess, *fragments: str) -> str:
    """The command failed as bad input must: exit 2, no traceback, and exactly one `error:` line (besides the
    count of refused specs a command over several adds), holding every fragment; returns that line."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:") and not _COUNT_LINE.match(line)]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), result.stderr
    return errors[0]


def strict_json_files(folder: Path) -> int:
    """Parse every .json and .jsonl file under `folder` with a strict parser (NaN, Infinity and -Infinity
    refused, as most JSON parsers outside Python refuse them); returns how many files were read."""

    def refuse(constant: str):
        raise AssertionError(f"not strict JSON: {constant}")

    count = 0
    for path in sorted(Path(folder).rglob("*.json*")):
        if path.suffix in (".json", ".jsonl") and path.is_file():
            text = path.read_text()
            lines = text.splitlines() if path.suffix == ".jsonl" else [text]
            for line in filter(str.strip, lines):
                json.loads(line, parse_constant=refuse)
            count += 1
    return count


def shared_root(tmp_path_factory) -> Path:
    """A folder of this test session that every pytest-xdist worker sees (the workers' base folders are
    siblings in it); the session's own base folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """What make(folder) returns, made once per test session in shared_root/name: the first worker to ask
    makes it under an exclusive lock, the others wait on that lock and take what it wrote."""
    folder = shared_root(tmp_path_factory) / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.with_name(name + ".done")
    with open(folder.with_name(name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a make that failed in another worker left
            folder.mkdir()
            done.write_text(str(make(folder)))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def prepared32(tmp_path_factory, phantom_dir) -> Path:
    """The small phantom prepared at 32 px (12 images), shared by the training tests (read-only)."""
    from heartjobs.data.prepare import PrepareParams, prepare

    def make(folder: Path) -> Path:
        prepare(phantom_dir, folder / "phantom32", PrepareParams(size=32), workers=1)
        return folder / "phantom32"

    return made_once(tmp_path_factory, "prepared32", make)


def _toml_value(value) -> str:
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _toml_table(values: dict) -> list[str]:
    return [f"{key} = {_toml_value(value)}" for key, value in values.items()]


def write_spec(folder: Path, name: str, model: str, prepared: Path, eval: dict | None = None, **train) -> Path:
    """A job spec TOML file with the given [train] values and [eval] table (default: no FID), its
    artifacts under folder/artifacts."""
    lines = [f'name = "{name}"', f'model = "{model}"', "[data]", f'prepared = "{prepared}"', "[train]"]
    lines += _toml_table(train)
    lines += ["[eval]", *_toml_table(eval if eval is not None else {"measure": False})]
    lines += ["[output]", f'root = "{folder / "artifacts"}"']
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def uninterrupted_run(
    tmp_path_factory, prepared: Path, *, model: str = "dcgan", name: str = "resume_me", **train
) -> Path:
    """Job `name` (DCGAN unless `model` says otherwise) trained start to end: what an interrupted-and-resumed
    run of the same spec must match bit for bit."""
    from heartjobs.runner.lifecycle import run_job

    return run_job(write_spec(tmp_path_factory.mktemp("reference"), name, model, prepared, **train))


def wait_for(predicate: Callable[[], bool], timeout: float = 180, proc: subprocess.Popen | None = None) -> None:
    """Poll until predicate() holds; fail on timeout, or as soon as `proc` (if given) has exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, f"the process ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def losses(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]


def assert_same_run(resumed: Path, reference: Path) -> None:
    """Bit for bit: the final generator, the last checkpoint's discriminator, and every epoch's losses."""
    from heartjobs.store.checkpoint import list_checkpoints, load_generator

    a, b = (load_generator(d / "generator.pt")[0].state_dict() for d in (resumed, reference))
    for key in b:
        assert torch.equal(a[key], b[key]), key
    final = [torch.load(list_checkpoints(d / "checkpoints")[-1], weights_only=True) for d in (resumed, reference)]
    for key in final[1]["D"]:
        assert torch.equal(final[0]["D"][key], final[1]["D"][key]), key
    strip = [[(e["epoch"], e["d_loss"], e["g_loss"]) for e in losses(d)] for d in (resumed, reference)]
    assert strip[0] == strip[1]


# DCGAN (dropout: the global RNG matters too), many small batches so that signals land mid-run: the
# signal tests wait for a checkpoint or an epoch's losses to appear and signal then, with most epochs left.
SLOW_DCGAN = {"epochs": 12, "batch_size": 2, "sample_every": 4, "checkpoint_every": 2, "device": "cpu"}


@pytest.fixture(scope="session")
def slow_dcgan_reference(tmp_path_factory, prepared32) -> Path:
    """Job "resume_me" (SLOW_DCGAN) trained start to end, once per session: what every interrupted and
    resumed run of it (tests/test_resume.py, tests/test_cluster.py) must match bit for bit."""
    return made_once(tmp_path_factory, "slow_dcgan_reference", lambda folder: _trained(folder, prepared32))


def _trained(folder: Path, prepared: Path) -> Path:
    from heartjobs.runner.lifecycle import run_job

    return run_job(write_spec(folder, "resume_me", "dcgan", prepared, **SLOW_DCGAN))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """heartjobs' cache (untrained Inception weights, real FID statistics) and its device locks in fresh
    folders per session (per xdist worker: a test's cache hits and lock waits are its own worker's),
    shared with the subprocesses the tests start."""
    os.environ["HEARTJOBS_CACHE"] = str(tmp_path_factory.mktemp("heartjobs_cache"))
    os.environ["HEARTJOBS_LOCK_DIR"] = str(tmp_path_factory.mktemp("heartjobs_locks"))
    yield
