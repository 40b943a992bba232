"""Records on disk: each JSON file heartjobs writes is a pydantic model with a format number, written and
read through Record alone; and the measurement record (fid.json, evals/*.json, a line of metrics.jsonl),
which the run folder, the evaluation and the report all read.

A file without a format number is format 1, what heartjobs wrote before records had one. Every format
written so far is read, upgraded to the current one (Record.upgrade). What other machines write is not
trusted: a file that is missing, not JSON, or not such a record reads as None, and a field that does not
validate reads as missing; neither ever raises.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from heartjobs import atomic
from heartjobs.errors import one_line


class Record(BaseModel):
    """A record with its format number. Fields a record's writer did not set are not written, so a
    record read and written again keeps its keys; keys a model does not name travel along unchanged."""

    model_config = ConfigDict(extra="allow")

    FORMAT: ClassVar[int] = 2  # what this code writes; 1: the same fields, before records had a number
    format: int = FORMAT

    @model_validator(mode="before")
    @classmethod
    def _upgraded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            written = data.get("format", 1)
            data = cls.upgrade(dict(data), written if isinstance(written, int) else 1)
            data["format"] = cls.FORMAT  # set, so that it is written
        return data

    @classmethod
    def upgrade(cls, data: dict, written: int) -> dict:
        """A record of format `written` as the current format's fields. Format 1 had today's fields."""
        return data

    @classmethod
    def parse(cls, data: object, problems: list[str] | None = None) -> Self | None:
        """The record in `data` (a decoded JSON value); None when it is not one. A field that does not
        validate is read as missing (a record that needs it is then none). Each field so left out, and why,
        is added to `problems` ("kid_mean: Input should be a valid number"): what a reader that shows
        other machines' files tells its user."""
        if not isinstance(data, dict):
            _note(problems, {"": "not a JSON object"})
            return None
        found: dict[str, str] = {}  # the first reason per field (a field dropped is then missing too)
        record = None
        for _ in range(2):
            try:
                record = cls.model_validate(data)
                break
            except ValidationError as exc:
                for error in exc.errors():
                    where = ".".join(map(str, error["loc"]))
                    found.setdefault(where.split(".")[0], f"{where}: {error['msg'].removeprefix('Value error, ')}")
                bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
                if not bad & data.keys():
                    break
                data = {key: value for key, value in data.items() if key not in bad}
        _note(problems, found)
        return record

    @classmethod
    def read(cls, path: Path, problems: list[str] | None = None) -> Self | None:
        """The record in the file at `path`; None when it is missing, unreadable or not such a record (what
        is wrong with a file that is there goes into `problems`, as in parse)."""
        try:
            data = atomic.loads_json(Path(path).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or nested too deep (atomic.loads_json)
            _note(problems, {"": f"not readable as JSON ({one_line(exc, 200, with_type=True)})"})
            return None
        return cls.parse(data, problems)

    @classmethod
    def parse_line(cls, line: str) -> Self | None:
        """The record on one line of a JSON-lines log; None for a damaged line."""
        with contextlib.suppress(ValueError):
            return cls.parse(atomic.loads_json(line))
        return None

    def data(self) -> dict:
        """The record as the JSON object it is written as."""
        return self.model_dump(exclude_unset=True)

    def write(self, path: Path) -> None:
        """Write the record to `path` atomically."""
        atomic.write_json(path, self.data())

    def line(self) -> str:
        """The record as one line of a JSON-lines log."""
        return atomic.dumps_json(self.data())


def _note(problems: list[str] | None, found: dict[str, str]) -> None:
    """Add each problem ({field: "field: why"}; "" for the whole file) to `problems`, one line each."""
    if problems is not None:
        problems.extend(one_line(why, 300) for why in found.values())


PRDC_NUMBERS = ("precision", "recall", "density", "coverage")
_SPACE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def finite(value: object) -> float | None:
    """`value` as a float when it is a finite number (not a bool); None otherwise."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) else None


def _at(data: object, *keys: str) -> object:
    """data[k1][k2]...; None where a level is missing or is not an object."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


class Measurement(Record):
    """A measurement of a generator (heartjobs.evaluation.driver.measure's result) with what it
    measured: fid.json (the run's own), evals/<snapshot>_<settings hash>.json, a line of metrics.jsonl.
    One measured against another set than the run's own says which (`against`; its own settings hash).
    A record without its values or their protocol is no measurement (a damaged or foreign file)."""

    metric: str = "fid"
    run: str | None = None
    job: str | None = None
    spec_hash: str | None = None
    snapshot: dict | None = None  # {"file": "generator.pt", "epoch": 200}
    fid_mean: float
    fid_std: float
    repeats: list[dict]
    n_generated: int
    n_real: int
    dims: int
    normalize: str
    standard_weights: bool
    weights: dict = {}
    features: str = "inception"  # the feature network: inception, or radimagenet (records before it: inception)
    kid_mean: float | None = None
    kid_std: float | None = None
    frd: dict | None = None  # {"mean", "std", "version", ...} or {"error", ...}
    # fidelity and diversity apart, and memorisation (heartjobs.evaluation.driver's result documents them):
    # {"k", "space", "network", "dims", "n_real", "n_generated", "precision": {"mean", "std"}, "recall", ...}
    prdc: dict | None = None
    prdc_radiomics: dict | None = None  # the same in the radiomic space, or {"error": ...}
    ms_ssim: dict | None = None  # {"ratio": {"mean", "std"}, "generated": ..., "real": ..., "pairs", ...}
    memorisation: dict | None = None  # {"memorised": bool, "spaces": {"pixels": {...}, ...}, "figure": ...}
    ladder: dict | None = None  # the validity ladder's verdict per number (None: never laddered)
    settings_hash: str | None = None
    # measured against another prepared set than the run's own (`evaluate --against`, [eval] against):
    # {"prepared": its path, "content_hash": ..., "count": ...}; None: the run's own set
    against: dict | None = None
    time: str | None = None

    @field_validator("frd")
    @classmethod
    def _frd_values_are_numbers(cls, frd: dict | None) -> dict | None:
        """A measured FRD has its mean and std as numbers (readers format and round them)."""
        if frd and ("mean" in frd or "std" in frd):
            for key in ("mean", "std"):
                value = frd.get(key)
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if not (number and abs(value) <= sys.float_info.max):  # NaN compares False too
                    raise ValueError(f"{key} is not a finite number")
        return frd

    def number(self, key: str) -> float | None:
        """The mean over repeats of one ranked number (heartjobs.evaluation.metrics.numbers()' keys: "fid",
        "kid", "frd", "precision", "coverage_radiomics", "ms_ssim_ratio", "memorised_pixels", ...); None
        where it was not measured or is not a finite number (a file made elsewhere may hold anything)."""
        if key in ("fid", "kid"):
            value = getattr(self, f"{key}_mean")
        elif key == "frd":
            value = _at(self.frd, "mean")
        elif key == "ms_ssim_ratio":
            value = _at(self.ms_ssim, "ratio", "mean")
        elif key.startswith("memorised_"):
            value = _at(self.memorisation, "spaces", key.removeprefix("memorised_"), "fraction", "mean")
        elif key.removesuffix("_radiomics") in PRDC_NUMBERS:
            value = _at(self.prdc_radiomics if key.endswith("_radiomics") else self.prdc, key.split("_")[0], "mean")
        else:
            value = None
        return finite(value)

    def memorised_spaces(self) -> list[str] | None:
        """The spaces in which memorisation was flagged (in the mean or in any repeat), in the record's order;
        None where memorisation was not measured. Only names that look like a space's are kept (they are
        shown in tables and on pages)."""
        if not isinstance(self.memorisation, dict):
            return None
        spaces = self.memorisation.get("spaces")
        spaces = spaces if isinstance(spaces, dict) else {}
        flagged = [
            name
            for name, space in spaces.items()
            if _SPACE_NAME.fullmatch(str(name))
            and (
                (isinstance(space, dict) and space.get("memorised") is True)
                or any(isinstance(r, dict) and r.get(f"memorised_{name}_flag") is True for r in self.repeats)
            )
        ]
        return flagged

    @property
    def epoch(self) -> int | None:
        """The epoch of the snapshot measured; None where the record does not say."""
        epoch = (self.snapshot or {}).get("epoch")
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
