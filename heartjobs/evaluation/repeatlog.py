"""The finished repeats of one measurement, kept in a file as each ends, so that a measurement stopped
part-way (a requeue, a time limit shorter than the evaluation) goes on with the next repeat instead of
starting over. One file per measurement, named by a key of everything its values depend on (the settings,
the snapshot, the device); removed once the measurement's record is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from heartjobs import atomic
from heartjobs.evaluation.radiomics import FrdResult


class RepeatLog:
    """Each finished repeat's entry (fid, kid), then its FRD, written atomically as it is known."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[int, dict] = {int(k): v for k, v in atomic.read_json(self.path).get("repeats", {}).items()}

    def get(self, repeat: int) -> dict | None:
        return self.entries.get(repeat)

    def put(self, repeat: int, entry: dict, frd: FrdResult | None = None, frd_error: str | None = None) -> None:
        saved = dict(entry)
        if frd is not None:
            saved["_frd_result"] = {**frd.__dict__, "shift": [float(x) for x in frd.shift]}
        if frd_error is not None:
            saved["_frd_error"] = frd_error
        self.entries[repeat] = saved
        atomic.write_json(self.path, {"repeats": {str(k): v for k, v in sorted(self.entries.items())}})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def entry_of(saved: dict) -> dict:
    """A repeat's entry as the record shows it (without what only a resumed measurement needs)."""
    return {k: v for k, v in saved.items() if not k.startswith("_")}


def frd_of(saved: dict) -> FrdResult | None:
    if "_frd_result" not in saved:
        return None
    fields = dict(saved["_frd_result"])
    return FrdResult(**{**fields, "shift": np.array(fields["shift"])})


def has_frd(saved: dict) -> bool:
    """Whether FRD was settled for this repeat: measured, or found undefined."""
    return "_frd_result" in saved or "_frd_error" in saved
