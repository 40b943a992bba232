"""Shared fixtures and helpers: a small real phantom (JPEG 2000 on disk), the real CLI as a subprocess,
job spec files, waiting for a condition, and comparing a resumed run with an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

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
    lines += ["[eval]", *_toml_table(eval if eval is not None else {"fid": False})]
    lines += ["[output]", f'root = "{folder / "artifacts"}"']
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def uninterrupted_run(
    tmp_path_factory, prepared: Path, *, model: str = "dcgan", name: str = "resume_me", **train
) -> Path:
    """Job `name` (DCGAN unless `model` says otherwise) trained start to end: what an interrupted-and-resumed
    run of the same spec must match bit for bit."""
    from heartjobs.job import run_job

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
    from heartjobs.checkpoint import list_checkpoints, load_generator

    a, b = (load_generator(d / "generator.pt")[0].state_dict() for d in (resumed, reference))
    for key in b:
        assert torch.equal(a[key], b[key]), key
    final = [torch.load(list_checkpoints(d / "checkpoints")[-1], weights_only=True) for d in (resumed, reference)]
    for key in final[1]["D"]:
        assert torch.equal(final[0]["D"][key], final[1]["D"][key]), key
    strip = [[(e["epoch"], e["d_loss"], e["g_loss"]) for e in losses(d)] for d in (resumed, reference)]
    assert strip[0] == strip[1]


# DCGAN (dropout: the global RNG matters too), many small batches so that signals land mid-run.
SLOW_DCGAN = {"epochs": 30, "batch_size": 2, "sample_every": 10, "checkpoint_every": 2, "device": "cpu"}


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """heartjobs' cache (untrained Inception weights, real FID statistics) in a fresh folder per session,
    shared with the subprocesses the tests start."""
    os.environ["HEARTJOBS_CACHE"] = str(tmp_path_factory.mktemp("heartjobs_cache"))
    yield
