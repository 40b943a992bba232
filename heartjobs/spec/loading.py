"""A spec file read, validated and resolved: TOML (bounded, UTF-8, a regular file), every validation problem
as a one-line error naming the file and field, and the model's defaults and the prepared set's facts filled in."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ValidationError

from heartjobs.atomic import nesting_depth
from heartjobs.errors import HeartjobsError
from heartjobs.models import FAMILIES, MODELS
from heartjobs.spec.defaults import architecture_defaults, train_defaults
from heartjobs.spec.schema import (
    MODEL_CHOICES,
    ArchitectureSection,
    DataSection,
    EvalSection,
    JobSpec,
    OutputSection,
    ResolvedArchitecture,
    ResolvedData,
    ResolvedSpec,
    ResolvedTrain,
    TrainSection,
    _FieldError,
    did_you_mean,
)

MAX_TOML_BYTES = 1 << 20  # a spec or sweep file is a few hundred bytes; read no more than this
# A spec nests three levels deep ([eval.during] n_generated), a sweep six (group, vary, betas' pairs); Python's
# TOML parser recurses once per level of arrays and inline tables (RecursionError near a thousand), and
# dotted keys nest without bound, deeper than anything that reads the result can follow.
MAX_TOML_DEPTH = 32


def _section_fields(loc: tuple) -> list[str]:
    sections = {
        "train": TrainSection,
        "data": DataSection,
        "architecture": ArchitectureSection,
        "eval": EvalSection,
        "output": OutputSection,
    }
    model = sections.get(loc[0]) if len(loc) > 1 else JobSpec
    return list(model.model_fields) if model else []


def _describe(error: dict) -> str:
    loc = tuple(str(p) for p in error["loc"])
    field = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown key{did_you_mean(loc[-1], _section_fields(loc))}"
    if error["type"] == "missing":
        return f"{field}: required key is missing"
    ctx_error = error.get("ctx", {}).get("error")
    if isinstance(ctx_error, _FieldError):
        return f"{'.'.join(ctx_error.loc)}: {ctx_error}"
    if loc == ("model",) and error["type"] == "literal_error":
        suggestion = did_you_mean(str(error["input"]), list(MODELS))
        return f"model: Input should be {MODEL_CHOICES}{suggestion} (got {error['input']!r})"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{field}: {msg} (got {error['input']!r})" if "input" in error and loc else f"{field}: {msg}"


def read_toml(path: Path) -> dict:
    """A TOML file's table; unreadable, non-UTF-8 or malformed files become a one-line HeartjobsError."""
    try:
        if not Path(path).exists():
            raise HeartjobsError(f"{path}: no such file")
        if not Path(path).resolve().is_file():  # a FIFO would hang, a device read without end
            raise HeartjobsError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_TOML_BYTES + 1)
        if len(data) > MAX_TOML_BYTES:
            raise HeartjobsError(f"{path}: larger than {MAX_TOML_BYTES // 1024} KiB; not a job spec")
        text = data.decode("utf-8")
    except OSError as exc:
        raise HeartjobsError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise HeartjobsError(f"{path}: not a UTF-8 text file (TOML must be UTF-8)") from None
    too_deep = HeartjobsError(f"{path}: nested more than {MAX_TOML_DEPTH} levels deep (a spec nests 3, a sweep 6)")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = ""
        if re.search(r"^\s*\[model\]", text, re.MULTILINE):  # the natural guess for the networks' knobs
            hint = " ([model] clashes with the key `model`; the networks' knobs go in [architecture])"
        raise HeartjobsError(f"{path}: TOML syntax error: {exc}{hint}") from None
    except RecursionError:
        raise too_deep from None
    if nesting_depth(table) > MAX_TOML_DEPTH:
        raise too_deep
    return table


def parse_spec(path: Path) -> JobSpec:
    """Read and validate one spec file; every problem becomes a one-line HeartjobsError."""
    path = Path(path)
    raw = read_toml(path)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise HeartjobsError("\n".join(f"{path}: {_describe(e)}" for e in _problems(exc.errors()))) from None


def overridden(section: BaseModel, values: dict, options: dict[str, str]) -> BaseModel:
    """`section` (a spec's table) with `values` put in, validated as the spec file's own values are (types,
    bounds, combinations): a command-line option that replaces a setting passes the same checks, and an
    error names the option (`options`: field -> option, e.g. n_generated -> --n)."""
    try:
        return type(section).model_validate({**section.model_dump(), **values})
    except ValidationError as exc:
        lines = []
        for error in _problems(exc.errors()):
            field = str(error["loc"][0]) if error["loc"] else ""
            lines.append(_describe(error).replace(field, options.get(field, field), 1))
        raise HeartjobsError("\n".join(lines)) from None


def _problems(errors: list[dict]) -> list[dict]:
    """The errors less a list's "too short" when its items failed (what is left of hidden = [0] is empty):
    the items' errors say it."""
    return [
        e
        for e in errors
        if not (e["type"] == "too_short" and any(o["loc"][: len(e["loc"])] == e["loc"] != o["loc"] for o in errors))
    ]


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and 2 ** int(math.log2(n)) == n


def resolve(spec: JobSpec, path: Path) -> ResolvedSpec:
    """Fill in the model's defaults and the prepared set's facts; check the combination."""
    from heartjobs.store.prepared import PreparedSet

    try:
        prepared = PreparedSet.open(spec.data.prepared)
    except HeartjobsError as exc:
        raise HeartjobsError(f"{path}: data.prepared: {exc}") from None
    facts = ResolvedData(
        prepared=spec.data.prepared,
        content_hash=prepared.content_hash,
        count=prepared.count,
        size=prepared.size,
        channels=prepared.channels,
    )
    return resolve_with(spec, facts, path)


def resolve_with(spec: JobSpec, data: ResolvedData, path: Path) -> ResolvedSpec:
    """The spec resolved against these facts of its prepared set (what `resolve` reads from it)."""
    if data.count < 2:
        raise HeartjobsError(f"{path}: data.prepared: {data.count} image; training needs at least 2")
    if data.size < 16 or not _is_power_of_two(data.size):
        raise HeartjobsError(f"{path}: data.prepared: image size {data.size} must be a power of two >= 16")
    if FAMILIES[spec.model].convolutional and data.size % 16:
        raise HeartjobsError(
            f"{path}: data.prepared: {spec.model} needs an image size divisible by 16, got {data.size}"
        )
    train = train_defaults(spec.model) | spec.train.model_dump(exclude_none=True)
    knob = architecture_defaults(spec.model) | spec.architecture.model_dump(exclude_none=True)
    if knob.get("channel_base", data.size) < data.size:  # StyleGAN2: channel_base // r channels at resolution r
        raise HeartjobsError(
            f"{path}: architecture.channel_base: {knob['channel_base']} leaves no channels at {data.size} px "
            f"(channels at resolution r are min(channel_base // r, channel_max)); use at least {data.size}"
        )
    return ResolvedSpec(
        name=spec.name,
        model=spec.model,
        data=data,
        train=ResolvedTrain(**train),
        architecture=ResolvedArchitecture(**knob),
        eval=spec.eval,
        output=spec.output,
    )


def load_spec(path: Path) -> ResolvedSpec:
    """Parse, validate and resolve a spec file."""
    return resolve(parse_spec(path), Path(path))
