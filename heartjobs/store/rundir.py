"""Run folders: artifacts/<job>/vNNNN, claimed atomically and never reused, and every file in one.

`RunDir` owns the names of the files a run writes and reads them back (the resolved spec and its hash,
the status, the losses, the metric reports); nothing else spells them out. A version is claimed by
renaming a staged folder that already holds its identity files onto the free number: the rename
succeeds for exactly one process, and a version never exists without what identifies it, whenever a
process dies. `latest` points at the newest. The same numbered folders hold submissions
(submissions/vNNNN).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.records import Measurement
from heartjobs.store.best import Choice, best_of
from heartjobs.store.status import Status, StatusFile, read_status

_VERSION = re.compile(r"v(\d{4,})")
LATEST = "latest"
_CLAIM_MARKER = ".claimed"

# --- an artifacts folder: a folder per job, and beside them the files `heartjobs report` writes ---

# The report's files (heartjobs.report names its outputs from these). A job may not be named like one
# (the spec refuses it): job folders and the report's files never collide.
SUMMARY_FILES = ("summary.md", "summary.csv", "summary.json")
REPORT_PAGE = "report.html"
REPORT_FIGURE = "report_{what}.png"  # each figure
LADDER_FOLDER = "ladder"  # `heartjobs ladder`'s folder beside the jobs' (its default --out: artifacts/ladder)


def is_report_output(name: str) -> bool:
    """Whether `name`, in an artifacts folder, is (or could be) a file the report writes there."""
    return name in (*SUMMARY_FILES, REPORT_PAGE) or (name.startswith("report_") and name.endswith(".png"))


# --- numbered version folders ---


def versions(root: Path) -> list[Path]:
    """The vNNNN folders under `root`, oldest first: real folders only. A link or a file by such a name is
    no version, and is never followed (it may point anywhere); the writers refuse it, named
    (refuse_strays)."""
    return [path for path, is_folder in _numbered(root) if is_folder]


def refuse_strays(root: Path) -> None:
    """A one-line error naming the first vNNNN or `latest` under `root` that is not what heartjobs makes
    there (a real version folder; a symbolic link): checked before a version is claimed or resumed, so that
    nothing is written through a link heartjobs did not make, nor a version claimed that cannot be finished."""
    for path, is_folder in _numbered(root):
        if not is_folder:
            raise HeartjobsError(
                f"{path}: {_kind(path)} where a version folder belongs; heartjobs does not follow it "
                "(remove it, or put the real folder there)"
            )
    latest = Path(root) / LATEST
    if os.path.lexists(latest) and not latest.is_symlink():
        raise HeartjobsError(
            f"{latest}: {_kind(latest)} where heartjobs keeps its link to the newest version; remove or rename it"
        )


def _numbered(root: Path) -> list[tuple[Path, bool]]:
    """Every vNNNN name under `root`, by number, and whether it is a real folder (not a link to one)."""
    try:
        children = list(Path(root).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for path in children:
        if match := _VERSION.fullmatch(path.name):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                found.append((int(match.group(1)), path, stat.S_ISDIR(path.lstat().st_mode)))
    return [(path, is_folder) for _, path, is_folder in sorted(found)]


def _kind(path: Path) -> str:
    """What a path is, in words, without following it."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link" if path.exists() else "a dangling symbolic link"
    return "a folder" if stat.S_ISDIR(mode) else "a file"


def version_number(folder: Path) -> int:
    return int(Path(folder).name[1:])


def claim_version(root: Path, fill: Callable[[Path], None] | None = None) -> Path:
    """Create and return the next free vNNNN folder under `root`, safe against concurrent claims. With
    `fill`, the folder's first files are written into a staged folder, and the version appears with them
    in one rename; a rename onto an existing version fails (a marker keeps the staged folder non-empty,
    and rename(2) may replace only an empty one), so two claims never share a version."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    refuse_strays(root)  # before anything is staged or claimed
    staged = atomic.temp_dir(root / "claim")
    try:
        if fill is not None:
            fill(staged)
        (staged / _CLAIM_MARKER).touch()
        existing = versions(root)
        number = version_number(existing[-1]) + 1 if existing else 1
        while True:
            candidate = root / f"v{number:04d}"
            try:
                os.rename(staged, candidate)
                break
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:  # a link or file put there since refuse_strays looked
                    refuse_strays(root)
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                number += 1
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    with contextlib.suppress(FileNotFoundError):
        (candidate / _CLAIM_MARKER).unlink()
    point_latest(root, candidate)
    return candidate


def point_latest(root: Path, version: Path) -> None:
    """Make root/latest a symlink to `version`, replaced atomically; anything but a link there is left as it
    is and named in a one-line error."""
    latest = Path(root) / LATEST
    tmp = Path(root) / f".{LATEST}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(version.name)
    try:
        os.replace(tmp, latest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):  # a folder where the link belongs
            refuse_strays(root)
        raise


# --- one run folder ---


class RunDir:
    """The files of one run folder, by name, and their readers."""

    JOB_TOML = "job.toml"  # the spec file as given
    RESOLVED = "resolved.json"  # {"spec_hash", "spec": the resolved spec}
    ENV = "env.json"  # what ran it (heartjobs.store.provenance); env.resumeN.json for each resume
    STATUS = "status.json"
    LOSSES = "losses.jsonl"  # one line per epoch
    LOSSES_PLOT = "losses.png"
    REAL_GRID = "real.png"
    SAMPLES = "samples"  # epoch_NNNN.png grids
    CHECKPOINTS = "checkpoints"
    GENERATOR = "generator.pt"  # the final generator alone
    FID_REPORT = "fid.json"  # the final generator measured with the spec's own settings
    METRICS = "metrics.jsonl"  # one line per evaluation, appended
    METRICS_PLOT = "metrics.png"  # the metrics against the epoch, where measured during training
    BEST = "best.pt"  # the checkpoint of the best-measured epoch ([eval] keep_best)
    EVALS = "evals"  # reports of other snapshots or settings
    EVAL_IMAGES = "eval_images"  # with [eval] save_images: the images the last own measurement saw, as PNG
    EVAL_PROGRESS = "eval_progress_{key}.json"  # a measurement's finished repeats, until its record is written
    TENSORBOARD = "tensorboard"  # with [output] tensorboard: the event files
    RUN_LOCK = ".lock"  # held by the process running this version (heartjobs.system.locks.run_lock)

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def number(self) -> int:
        return version_number(self.path)

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def generator(self) -> Path:
        return self.path / self.GENERATOR

    def remove_stale_temp_files(self) -> list[Path]:
        """Remove what writers killed mid-write left here: atomic.replacing's hidden temp files (a partial
        checkpoint can be a gigabyte) and a staged eval_images. Only for the process holding the run's
        lock, when nobody else writes here; returns what was removed."""
        stale = list(self.path.rglob(".*.tmp")) + [self.path / f"{self.EVAL_IMAGES}.partial"]
        removed = []
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink(missing_ok=True)
            else:
                continue
            removed.append(path)
        return removed

    def refuse_links(self) -> None:
        """A one-line error naming the first symbolic link inside this version. heartjobs makes none here, and
        one in a run folder from elsewhere could point at a file a resume or a measurement would then
        overwrite or append to: checked before either writes here."""
        for folder, folders, files in os.walk(self.path):  # a link to a folder is listed, never entered
            for name in folders + files:
                if (path := Path(folder) / name).is_symlink():
                    raise HeartjobsError(
                        f"{path}: a symbolic link inside a run folder; heartjobs makes none there and does not "
                        "write through one (remove it)"
                    )

    def resumed_env(self, count: int) -> Path:
        return self.path / f"env.resume{count}.json"

    def sample_grid(self, epoch: int) -> Path:
        return self.path / self.SAMPLES / f"epoch_{epoch:04d}.png"

    def sample_grids(self) -> list[Path]:
        return sorted((self.path / self.SAMPLES).glob("epoch_*.png"))

    # readers

    def resolved_record(self) -> dict:
        return atomic.read_json(self.path / self.RESOLVED)

    def spec_hash(self) -> str | None:
        return self.resolved_record().get("spec_hash")

    def spec_dict(self, problems: list[str] | None = None) -> dict:
        """The resolved spec as recorded ({} when there is none, or when what is there is not shaped like
        one: what is wrong, down to each field, is added to `problems`). Checked only as far as readers of
        an old or foreign run folder rely on it (RecordedSpec), not against today's schema."""
        try:
            record = atomic.loads_json((self.path / self.RESOLVED).read_text())
        except FileNotFoundError:
            _add(problems, "missing")
            return {}
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or nested too deep (atomic.loads_json)
            _add(problems, f"not readable as JSON ({one_line(exc, 200, with_type=True)})")
            return {}
        spec = record.get("spec") if isinstance(record, dict) else None
        if not isinstance(spec, dict):
            _add(problems, "spec: not a table")
            return {}
        try:
            RecordedSpec.model_validate(spec)
        except ValidationError as exc:
            _add(problems, *(f"spec.{_why(e)}" for e in exc.errors()))
            return {}
        return spec

    def spec(self):
        """The resolved spec as a heartjobs.spec.schema.ResolvedSpec; a folder without one is a one-line error."""
        from heartjobs.spec.schema import ResolvedSpec

        try:
            record = atomic.loads_json((self.path / self.RESOLVED).read_text())
            return ResolvedSpec.model_validate(record["spec"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HeartjobsError(f"{self.path / self.RESOLVED}: not a heartjobs run folder ({exc})") from None

    def status(self) -> Status:
        return read_status(self.path / self.STATUS)

    def training_finished(self) -> bool:
        """Whether the run's training has finished and only its measurement is left: its status says
        "trained" (a --defer-evaluation run) or it stopped while evaluating, and its generator is saved."""
        status = self.status()
        return (status.state == "trained" or status.phase == "evaluating") and self.generator.is_file()

    def status_file(self, epochs_total: int, process: dict) -> StatusFile:
        return StatusFile(self.path / self.STATUS, epochs_total, process)

    def losses(self, problems: list[str] | None = None) -> list[dict]:
        """The per-epoch records (LossRecord's fields); a line cut short by a crash, or anything else that
        is not an epoch's record, is left out. A JSON object that is not a valid epoch record is named in
        `problems` ("line 3: seconds: Input should be a valid number")."""
        records = []
        for number, line in enumerate(_lines(self.path / self.LOSSES), 1):
            try:
                record = atomic.loads_json(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            try:
                records.append(LossRecord.model_validate(record).model_dump())
            except ValidationError as exc:
                _add(problems, *(f"line {number}: {_why(e)}" for e in exc.errors()))
        return records

    def fid_report(self, problems: list[str] | None = None) -> Measurement | None:
        """The run's own measurement (fid.json); None where it has none, or a damaged or foreign one (what
        is wrong with it goes into `problems`, as Record.read says)."""
        return Measurement.read(self.path / self.FID_REPORT, problems)

    def metric_curve(self, settings_hash: str | None = None) -> dict:
        """The run's metrics against the epoch: the measurements (metrics.jsonl) taken with one setting
        (`settings_hash`, else the setting measured at most epochs) at two epochs or more, the newest record
        per epoch. {"settings_hash", "n_generated", "repeats", "epochs": [...], "fid": [...], "frd": [...],
        "precision": [...], "recall": [...] (PRDC in the feature network's space), "ms_ssim_ratio": [...]
        (None where not measured or not a finite number), "best_epoch" (heartjobs.store.best's rule; None when no
        metric is trusted), "best_by" (its metric), "best_choice" (the choice in words), "last_epoch"}; {}
        without such measurements."""
        key, by_epoch = self._measured_per_epoch(settings_hash)
        epochs = sorted(by_epoch)
        records = [by_epoch[e] for e in epochs]
        fid = [_finite(r.fid_mean) for r in records]
        frd = [_finite((r.frd or {}).get("mean")) for r in records]
        if sum(value is not None for value in fid) < 2:
            return {}
        best, choice = best_of(records)
        return {
            "settings_hash": key,
            "n_generated": records[-1].n_generated,
            "repeats": len(records[-1].repeats),
            "epochs": epochs,
            "fid": fid,
            "frd": frd,
            **{key: [r.number(key) for r in records] for key in ("precision", "recall", "ms_ssim_ratio")},
            "best_epoch": best.epoch if best else None,
            "best_by": choice.metric,
            "best_choice": choice.describe(),
            "last_epoch": epochs[-1],
        }

    def best_measured(self, settings_hash: str) -> tuple[Measurement | None, Choice]:
        """The best of the measurements taken with one setting (the newest per epoch), by heartjobs.store.best's
        rule, and the choice behind it; what best.pt is kept by."""
        return best_of(list(self._measured_per_epoch(settings_hash)[1].values()))

    def _measured_per_epoch(self, settings_hash: str | None) -> tuple[str | None, dict[int, Measurement]]:
        """(setting, {epoch: its newest measurement}) for `settings_hash`, else the setting measured at most
        epochs against the run's own set (one against another set is never the run's curve unless asked for
        by its hash); (None, {}) without measurements."""
        groups: dict[str, dict[int, Measurement]] = {}
        for record in self.metric_records():
            if settings_hash is None and record.against is not None:
                continue
            key = record.settings_hash or json.dumps(  # records from before settings were hashed
                [record.n_generated, record.dims, record.normalize, record.n_real]
                + [len(record.repeats), record.weights.get("sha256")]
            )
            groups.setdefault(key, {})[record.epoch] = record
        if settings_hash is not None:
            groups = {settings_hash: groups.get(settings_hash, {})}
        if not groups:
            return None, {}
        return max(groups.items(), key=lambda item: len(item[1]))

    def metric_records(self) -> list[Measurement]:
        """Every measurement of this run, in order (metrics.jsonl): each names the snapshot (file, epoch) it
        measured; a damaged line is left out."""
        records = [Measurement.parse_line(line) for line in _lines(self.path / self.METRICS)]
        return [record for record in records if record is not None and record.epoch is not None]


class LossRecord(BaseModel):
    """One line of losses.jsonl (training.loop.EpochStats.as_dict); what a reader may rely on."""

    model_config = ConfigDict(extra="allow")

    epoch: int
    d_loss: float | None = None
    g_loss: float | None = None
    seconds: float = 0.0
    images_per_s: float = 0.0


class _RecordedTrain(BaseModel):
    model_config = ConfigDict(extra="allow")

    seed: int | None = None


class RecordedSpec(BaseModel):
    """resolved.json's "spec" as far as readers of any run folder rely on it: its model, and its tables as
    tables (the training seed an integer). Looser than today's ResolvedSpec, which older runs need not pass."""

    model_config = ConfigDict(extra="allow")

    model: str
    train: _RecordedTrain = Field(default_factory=_RecordedTrain)
    data: dict = Field(default_factory=dict)
    architecture: dict | None = None


def _add(problems: list[str] | None, *found: str) -> None:
    """Add what a reader found wrong with a file to `problems` (where the caller collects them), a line each."""
    if problems is not None:
        problems.extend(one_line(text, 300) for text in found)


def _why(error: dict) -> str:
    """A validation error as "field: why" (a table is a table, whatever model reads it)."""
    why = "Input should be a table" if error["type"] == "model_type" else error["msg"]
    return f"{'.'.join(map(str, error['loc']))}: {why}"


def _finite(value: object) -> float | None:
    """A measured value, or None for anything that is not a finite number (a damaged or foreign record)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []


# --- a job's versions ---


def newest_unfinished(job_root: Path) -> Path | None:
    """The newest version whose status is not done (running, interrupted or failed). A version without a
    resolved spec (a folder left by a process killed while older code claimed it) is no run: skipped. What
    looks for a version to resume asks this: a vNNNN that is a link, or a `latest` that is not, is refused
    (refuse_strays), never followed."""
    refuse_strays(job_root)
    for run_dir in reversed(versions(job_root)):
        run = RunDir(run_dir)
        if (run / RunDir.RESOLVED).is_file() and run.status().state != "done":
            return run_dir
    return None


def finished_version(spec, after: int = 0) -> Path | None:
    """The newest finished (done) version, numbered above `after`, made with this ResolvedSpec's
    configuration (its spec hash)."""
    for run_dir in reversed(versions(spec.run_root)):
        if version_number(run_dir) <= after:
            break
        run = RunDir(run_dir)
        if run.spec_hash() == spec.spec_hash and run.status().state == "done":
            return run_dir
    return None
