"""Which prepared sets a list of job specs trains on, and whether each is there yet: what `make run-all`
prepares before it queues the jobs (specs are parsed, not resolved, since their sets may not exist)."""

from __future__ import annotations

from pathlib import Path

from heartjobs.errors import HeartjobsError
from heartjobs.spec.loading import parse_spec
from heartjobs.store.prepared import PreparedSet


def needed_sets(spec_paths: list[Path]) -> tuple[list[tuple[Path, bool]], list[HeartjobsError]]:
    """([(prepared set folder, ready), ...] in first-use order, one per folder; [error of each bad spec])."""
    folders: list[Path] = []
    errors: list[HeartjobsError] = []
    for path in spec_paths:
        try:
            folder = parse_spec(path).data.prepared
        except HeartjobsError as exc:
            errors.append(exc)
            continue
        if folder not in folders:
            folders.append(folder)
    return [(folder, _ready(folder)) for folder in folders], errors


def _ready(folder: Path) -> bool:
    try:
        PreparedSet.open(folder)
    except HeartjobsError:
        return False
    return True
