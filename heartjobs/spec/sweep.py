"""Sweep files: a base spec plus the training values to vary, expanded into one job spec file per run.

`one-at-a-time` (the thesis' design) gives each group a default job and one job per varied value with
everything else at the default; `grid` gives the full cartesian product. `seeds = [0, 1, 2]` (for the
whole sweep, or per group) repeats every configuration once per training seed. Job names say what
differs: gan_default, gan_lr0.0001, wgan_clip0.005, gan_betas0.9-0.999, dcgan_bsize16 (grid: joined with
"_"), and a seed other than 0 adds "_s<seed>" (gan_default_s1), so a seed-0 job keeps its single-seed name.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from heartjobs import atomic
from heartjobs.errors import HeartjobsError
from heartjobs.spec.defaults import BOOKKEEPING_KEYS, is_default, train_defaults
from heartjobs.spec.loading import read_toml
from heartjobs.spec.schema import MAX_SEED, JobSpec, ModelName, TrainSection

# Short names for the varied hyperparameters in job names and labels: the thesis' own (lr, ldim, bsize),
# then short forms of the rest; any other [train] key is named by itself without underscores.
ABBREVIATIONS = {
    "lr": "lr",
    "latent_dim": "ldim",
    "batch_size": "bsize",
    "clip_value": "clip",
    "n_critic": "ncritic",
    "batchnorm_eps": "bneps",
    "gp_lambda": "gp",
    "augment": "aug",
}


# A training seed as [train] seed takes it (an integer, 0 to MAX_SEED), said before any job file is written.
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]


def _unique_seeds(seeds: list[int] | None) -> list[int] | None:
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError("each seed once")
    return seeds


class SweepGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: ModelName
    mode: Literal["one-at-a-time", "grid"] | None = None  # this group's design, instead of the sweep's
    vary: dict[str, list[Any]] = {}
    seeds: list[Seed] | None = Field(None, min_length=1)  # this group's seeds, instead of the sweep's

    _seeds = field_validator("seeds")(_unique_seeds)


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["one-at-a-time", "grid"] = "one-at-a-time"
    # Training seeds, each configuration trained once per seed; None: once, with the base's seed.
    seeds: list[Seed] | None = Field(None, min_length=1)
    # The spec's tables every job starts from ([base.data], [base.train], ...); each group names its model,
    # the sweep each job.
    base: dict[str, dict[str, Any]] = {}
    group: list[SweepGroup]

    _seeds = field_validator("seeds")(_unique_seeds)


def format_value(value: Any) -> str:
    """A value as a label shows it: 0.0001 (not 1e-04), (0.9, 0.999), true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return np.format_float_positional(value, trim="-")
    if isinstance(value, list | tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    return str(value)


def abbreviation(key: str) -> str:
    return ABBREVIATIONS.get(key, key.replace("_", ""))


def name_part(key: str, value: Any) -> str:
    """One varied value as it appears in a job name: lr0.0001, betas0.9-0.999, tf32convolutions; only the
    characters a job name allows."""
    text = "-".join(format_value(v) for v in value) if isinstance(value, list | tuple) else format_value(value)
    return abbreviation(key) + re.sub(r"[^A-Za-z0-9.-]", "-", text)


def _label(changes: dict[str, Any]) -> str:
    """The changes in [train]'s own key order, so that one combination has one name however a group lists
    its keys."""
    if not changes:
        return "default"
    order = list(TrainSection.model_fields)
    return "_".join(name_part(k, changes[k]) for k in sorted(changes, key=order.index))


def _canonical(key: str, value: Any) -> Any:
    """A [train] value as the spec schema takes it (augment "translation, cutout" -> "translation,cutout";
    a list stays a list), so that one configuration has one name however it is spelled. A value the schema
    refuses stays as written: expand reports it, naming its job."""
    try:
        taken = getattr(TrainSection.model_validate({key: value}), key)
    except ValidationError:
        return value
    return list(taken) if isinstance(taken, tuple) else taken


def _variants(group: SweepGroup, mode: str, base_train: dict[str, Any]) -> list[dict[str, Any]]:
    """The changes of each entry, in order. A varied value equal to what the job would have anyway (the
    base's value, else the model's default) is no change: a grid through the default names that cell
    gan_default, and the same entry twice is written once."""
    vary = {key: [_canonical(key, value) for value in values] for key, values in group.vary.items()}
    if (group.mode or mode) == "grid":
        combos = [dict(zip(vary, combo, strict=True)) for combo in itertools.product(*vary.values())]
    else:
        combos = [{}] + [{key: value} for key, values in vary.items() for value in values]
    defaults = train_defaults(group.model) | {key: _canonical(key, value) for key, value in base_train.items()}
    return [{k: v for k, v in combo.items() if not is_default(defaults.get(k), v)} for combo in combos]


def _where(error: dict) -> str:
    return ".".join(map(str, error["loc"]))


def load_sweep(path: Path) -> Sweep:
    raw = read_toml(path)
    for key, value in (raw.get("base") if isinstance(raw.get("base"), dict) else {}).items():
        if not isinstance(value, dict):
            raise HeartjobsError(
                f"{path}: base.{key}: not a table; [base] holds the spec's tables ([base.data], [base.train], ...),"
                " each group names its model and the sweep each job"
            )
    try:
        sweep = Sweep.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {_where(e)}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise HeartjobsError("\n".join(lines)) from None
    base_seed = isinstance(sweep.base.get("train"), dict) and "seed" in sweep.base["train"]
    for i, group in enumerate(sweep.group):
        for key in group.vary:
            if key not in TrainSection.model_fields:
                raise HeartjobsError(f"{path}: group[{i}].vary.{key}: not a [train] key")
            if key == "seed":
                raise HeartjobsError(f"{path}: group[{i}].vary.seed: say the seeds as `seeds = [...]`")
            if key in BOOKKEEPING_KEYS:
                raise HeartjobsError(
                    f"{path}: group[{i}].vary.{key}: how a run is bookkept, not what it trains; set it in [base.train]"
                )
        if base_seed and (group.seeds or sweep.seeds):
            where = f"group[{i}].seeds" if group.seeds else "seeds"
            raise HeartjobsError(f"{path}: {where}: base.train.seed is set too; say the seeds in one place")
    return sweep


def _job_name(model: str, changes: dict[str, Any], seed: int | None) -> str:
    name = f"{model}_{_label(changes)}"
    return name if not seed else f"{name}_s{seed}"


def expand(sweep: Sweep, source: Path) -> dict[str, dict]:
    """{job name: spec as a TOML-ready dict}, in sweep order; each is checked against the spec schema, and
    two entries that would share a name are an error naming both."""
    jobs: dict[str, dict] = {}
    origin: dict[str, str] = {}  # job name -> the entry that made it, for the clash message
    for i, group in enumerate(sweep.group):
        seeds = group.seeds or sweep.seeds or [None]
        for changes in _variants(group, sweep.mode, dict(sweep.base.get("train", {}))):
            for seed in seeds:
                name = _job_name(group.model, changes, seed)
                spec = {"name": name, "model": group.model, **{k: dict(v) for k, v in sweep.base.items()}}
                train = {**spec.get("train", {}), **changes}
                if seed:  # seed 0 is the default: a seed-0 job's file is the single-seed sweep's
                    train["seed"] = seed
                if train:
                    spec["train"] = train
                entry = f"group[{i}] ({group.model}" + "".join(f", {k} = {format_value(v)}" for k, v in changes.items())
                entry += f", seed {seed})" if seed is not None else ")"
                try:
                    JobSpec.model_validate(spec)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    raise HeartjobsError(f"{source}: {name}: {_where(first)}: {first['msg']}") from None
                if name in jobs and jobs[name] == spec:
                    continue  # the same job again (a grid through the default, another group's default)
                if name in jobs:
                    raise HeartjobsError(f"{source}: {origin[name]} and {entry} would both be named {name}")
                jobs[name], origin[name] = spec, entry
    return jobs


def render(spec: dict, source: Path) -> str:
    """The job file's text: a header saying where it came from, then the spec."""
    header = f"# Generated by `heartjobs sweep {source}`; edit that file, not this one.\n"
    return header + tomli_w.dumps(spec)


def default_jobs_folder(sweep_path: Path) -> Path:
    """jobs/future.sweep.toml -> jobs/future."""
    return Path(sweep_path).parent / Path(sweep_path).name.removesuffix(".toml").removesuffix(".sweep")


def write_jobs(sweep_path: Path, out: Path, *, dry_run: bool = False) -> list[Path]:
    """Write (or, with dry_run, only list) one job file per sweep entry; returns their paths."""
    sweep = load_sweep(sweep_path)
    jobs = expand(sweep, sweep_path)
    paths = []
    for name, spec in jobs.items():
        path = Path(out) / f"{name}.toml"
        if not dry_run:
            atomic.write_bytes(path, render(spec, sweep_path).encode())
        paths.append(path)
    return paths
