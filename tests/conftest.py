"""Shared fixtures: a small real phantom (JPEG 2000 on disk) and a helper that runs the real CLI."""

from __future__ import annotations

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


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m heartjobs ARGS` as a real subprocess, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "heartjobs", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
