"""Shared fixtures: a small real phantom (JPEG 2000 on disk) and a helper that runs the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heartjobs.data.phantom import PhantomParams, generate

SMALL_PHANTOM = PhantomParams(slices=12, size=128, seed=7)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A 12-slice 128 px phantom, generated once per test session (treat as read-only)."""
    out = tmp_path_factory.mktemp("phantom") / "phantom"
    generate(out, SMALL_PHANTOM, workers=1)
    return out


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m heartjobs ARGS` as a real subprocess (extra environment variables in `env`)."""
    return subprocess.run(
        [sys.executable, "-m", "heartjobs", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def prepared32(tmp_path_factory, phantom_dir) -> Path:
    """The small phantom prepared at 32 px (12 images), shared by the training tests (read-only)."""
    from heartjobs.data.prepare import PrepareParams, prepare

    out = tmp_path_factory.mktemp("prepared") / "phantom32"
    prepare(phantom_dir, out, PrepareParams(size=32), workers=1)
    return out


def _toml_table(values: dict) -> list[str]:
    return [f"{key} = {json.dumps(value)}" for key, value in values.items()]


def write_spec(folder: Path, name: str, model: str, prepared: Path, eval: dict | None = None, **train) -> Path:
    """A job spec TOML file with the given [train] values and [eval] table (default: no FID), its
    artifacts under folder/artifacts."""
    lines = [f'name = "{name}"', f'model = "{model}"', "[data]", f'prepared = "{prepared}"', "[train]"]
    lines += _toml_table(train)
    lines += ["[eval]", *_toml_table(eval if eval is not None else {"fid": False})]
    lines += ["[output]", f'root = "{folder / "artifacts"}"']
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def uninterrupted_run(tmp_path_factory, prepared: Path, **train) -> Path:
    """Job "resume_me" (DCGAN) trained start to end: what an interrupted-and-resumed run of the same
    spec must match bit for bit."""
    from heartjobs.training.run import run_job

    return run_job(write_spec(tmp_path_factory.mktemp("reference"), "resume_me", "dcgan", prepared, **train))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """heartjobs' cache (untrained Inception weights, real FID statistics) in a fresh folder per session,
    shared with the subprocesses the tests start."""
    os.environ["HEARTJOBS_CACHE"] = str(tmp_path_factory.mktemp("heartjobs_cache"))
    yield
