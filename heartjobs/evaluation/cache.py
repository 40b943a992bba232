"""Where evaluation keeps what it computes once: untrained Inception weights, real-set FID statistics and
radiomic features, the ladder's verdicts. No torch here, so the light callers (verdicts, FRD's workers,
the preflight check) stay light."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """heartjobs' own cache ($HEARTJOBS_CACHE, default ~/.cache/heartjobs)."""
    return Path(os.environ.get("HEARTJOBS_CACHE") or Path.home() / ".cache" / "heartjobs")
