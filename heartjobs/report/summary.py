"""The study's summary: one row per job from its newest run folder, beside the thesis' Table 1.

It only reads artifacts. It writes summary.md, summary.csv and summary.json into the artifacts folder, plus
the figures (figures.py: the real grid and each model's best sample grid in one row, each beside the real grid
as the thesis' Figure 2, FID and FRD against each varied hyperparameter per model, ...). A run stands beside a
Table 1 value only when it was measured and trained as the thesis was (THESIS_PROTOCOL); otherwise its
`protocol` cell names what differs. Beside FID, KID and FRD, the numbers that ask one question each (issue 31:
precision and density for fidelity; recall, coverage and the MS-SSIM ratio for diversity, PRDC in the feature
network's space and in the radiomic; memorisation), labelled with their question and space, and their protocol
per run. A value whose number failed the validity ladder (`heartjobs ladder`, recorded in fid.json) is marked.
The best runs follow heartjobs.store.best's one rule, each shown with its fidelity, diversity and memorisation
and flagged where it collapsed or memorised. The thesis' own values and protocol are in thesis.py.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.evaluation import verdicts
from heartjobs.evaluation.metrics import QUESTIONS, numbers
from heartjobs.evaluation.records import FAILS_LADDER, failed_ladder
from heartjobs.models import MODELS
from heartjobs.records import Measurement, Record, finite
from heartjobs.report import configurations, figures, page
from heartjobs.report.cells import csv_text, markdown_cell, markdown_table
from heartjobs.report.statistics import TEST
from heartjobs.report.thesis import THESIS_KEYS, THESIS_PROTOCOL, THESIS_TABLE1, measured_protocol, protocol_differences
from heartjobs.spec.defaults import ARCHITECTURE_DEFAULTS, BOOKKEEPING_KEYS, is_default, train_defaults
from heartjobs.spec.identity import configuration_key
from heartjobs.spec.sweep import abbreviation, format_value
from heartjobs.store import best
from heartjobs.store.rundir import SUMMARY_FILES, RunDir, is_report_output, versions
from heartjobs.store.status import RUN_DEAD_AFTER_S, Status
from heartjobs.system import liveness

# Speed and precision switches: part of the protocol, not of a configuration's name.
PRECISION_KEYS = ("tf32", "compile", "bf16", "phase_conv")
# Values that don't name a configuration: how a run is bookkept, where it ran, the optimizer (which the
# model's defaults fix), and the precision switches.
# The training seed is not part of a configuration either: runs with different seeds are its repeats.
_NOT_CONFIGURATION = {*BOOKKEEPING_KEYS, "device", "optimizer", *PRECISION_KEYS, "seed"}
# The hyperparameters a configuration's label names; left out, what remains is the context in which
# configurations are compared (model, data, measurement, precision).
HYPERPARAMETERS = tuple(
    sorted(({k for m in MODELS for k in train_defaults(m)} | set(ARCHITECTURE_DEFAULTS)) - _NOT_CONFIGURATION)
)
COLUMNS = [
    "job", "model", "configuration", "seed", "state", "fid_mean", "fid_std", "kid_mean", "frd_mean", "frd_std",
    "precision", "density", "precision_radiomics", "density_radiomics", "recall", "coverage", "recall_radiomics",
    "coverage_radiomics", "ms_ssim_ratio", "memorised", "memorised_spaces", "memorised_pixels",
    "concerns", "epochs", "train_seconds", "images_per_s", "standard_weights", "n_generated", "ladder_fails",
    "protocol", "thesis_fid", "thesis_fid_std", "best_epoch", "run_dir",
]  # fmt: skip


class ReportRow(BaseModel):
    """One job's row of the report: COLUMNS (also the CSV's), then what summary.json's rows carry beyond
    them: the run's protocol values (THESIS_PROTOCOL's keys), its metrics unrounded, what identifies its
    configuration and the context it is compared in, its hyperparameters off the model's defaults, the
    metric its best epoch followed, and what heartjobs.store.best's rule needs of it. None: not known (a
    missing job, a run not measured)."""

    model_config = ConfigDict(extra="forbid")

    job: str
    model: str | None = None
    configuration: str | None = None
    seed: int | None = None
    state: str | None = None
    fid_mean: float | None = None
    fid_std: float | None = None
    kid_mean: float | None = None
    frd_mean: float | None = None
    frd_std: float | None = None
    # the numbers that ask one question each (QUESTION_OF), means over repeats; PRDC in the feature network's
    # space, and with _radiomics in the radiomic space
    precision: float | None = None
    density: float | None = None
    precision_radiomics: float | None = None
    density_radiomics: float | None = None
    recall: float | None = None
    coverage: float | None = None
    recall_radiomics: float | None = None
    coverage_radiomics: float | None = None
    ms_ssim_ratio: float | None = None
    memorised: bool | None = None  # memorisation flagged in some space; None: not measured
    memorised_spaces: str | None = None  # where, comma-separated
    memorised_pixels: float | None = None  # the fraction of generated images nearer a training slice, pixels
    concerns: str | None = None  # heartjobs.store.best.concerns: collapsed, memorised ("; "-separated)
    epochs: int | None = None
    train_seconds: float | None = None
    images_per_s: float | None = None
    standard_weights: bool | None = None
    n_generated: int | None = None
    ladder_fails: str | None = None
    protocol: str | None = None
    thesis_fid: float | None = None
    thesis_fid_std: float | None = None
    best_epoch: int | None = None
    run_dir: str | None = None
    protocol_values: dict | None = None
    metrics: dict | None = None
    configuration_key: str | None = None
    context_key: str | None = None
    changes: dict | None = None
    last_measured_epoch: int | None = None
    best_epoch_by: str | None = None
    assessment: dict | None = None
    frd_unmeasurable: str | None = None  # why FRD has no value (identical or degenerate sets), when it has none
    numbers_protocol: str | None = None  # how the one-question numbers were measured (k, n, space, pairs), in words
    memorisation_figure: str | None = None  # the run's closest (generated | training) pairs, a PNG in its folder


ROW_KEYS = list(ReportRow.model_fields)
assert ROW_KEYS[: len(COLUMNS)] == COLUMNS  # the CSV's columns first, in its order


class Summary(Record):
    """summary.json: the rows, the configurations over seeds with their statistics, the thesis' protocol,
    what the best runs follow (and the choice in words), the note the tables carry, and what in the run
    folders could not be read."""

    rows: list[ReportRow]
    configurations: list[dict]
    statistics: dict
    thesis_protocol: dict
    best_by: str | None = None
    best_choice: str | None = None
    best: list[dict] = []  # each model's best run with its fidelity, diversity, memorisation and concerns
    note: str
    warnings: list[str] = []  # what in the run folders could not be read, one line per file (collect)
    prepared_sets: list[
        dict
    ] = []  # the sets the runs trained on, with a fetched set's dataset and citation (data_sources)


# The numbers beside FID, KID and FRD that the tables show, each with its question (the registry's), and
# the question's label; ladder verdicts are read for every number of the registry. PRDC in both its spaces,
# the radiomic beside the feature network's: on the phantom the radiomic recall and coverage are the
# diversity numbers that pass the validity ladder.
SHOWN = (
    "precision", "density", "precision_radiomics", "density_radiomics",
    "recall", "coverage", "recall_radiomics", "coverage_radiomics", "ms_ssim_ratio",
)  # fmt: skip
QUESTION_OF = {key: number.question for key, (_, number) in numbers().items()}
LADDERED = ("fid", "kid", "frd", *(key for key in QUESTION_OF if key not in ("fid", "kid", "frd")))
NUMBER_TITLES = {"ms_ssim_ratio": "MS-SSIM gen/real"}

UNREADABLE = "unreadable"  # the state of a run whose resolved spec is not one (skipped)
FAILS_LADDER_MARK = "†"  # after a value whose metric failed the validity ladder


def differences(model: str, train: dict, architecture: dict | None = None) -> dict:
    """Training values that differ from the model's defaults (the thesis', or its paper's beyond the
    thesis), then the [architecture] values that differ from the thesis' widths (hidden, width)."""
    defaults = train_defaults(model)
    changes = {
        k: v
        for k, v in train.items()
        if k not in _NOT_CONFIGURATION and v is not None and k in defaults and not is_default(defaults[k], v)
    }
    for key, value in (architecture or {}).items():
        if value is not None and key in ARCHITECTURE_DEFAULTS and not is_default(ARCHITECTURE_DEFAULTS[key], value):
            changes[key] = value
    return changes


def label(changes: dict) -> str:
    """The thesis' way of naming a configuration: "default", "lr = 0.0001", "bsize = 16"."""
    if not changes:
        return "default"
    return ", ".join(f"{abbreviation(k)} = {format_value(v)}" for k, v in changes.items())


def _row(job: str, run_dir: Path | None, warnings: list[str]) -> dict:
    """The job's row (ReportRow's keys, checked against its types), as the tables index it: a dict. What
    in the run's files could not be read is left out, a line in `warnings` per file naming its fields; a
    run whose resolved spec is not one is skipped (its row says "unreadable")."""
    row = dict.fromkeys(ROW_KEYS)
    row["job"] = job
    if run_dir is None:
        row["state"] = "missing"
        return ReportRow.model_validate(row).model_dump()
    run = RunDir(run_dir)
    row["run_dir"] = str(run_dir)
    problems: list[str] = []
    spec = run.spec_dict(problems)
    if problems:
        _warn(warnings, run / RunDir.RESOLVED, problems, "run skipped")
        row["state"] = UNREADABLE
        return ReportRow.model_validate(row).model_dump()
    model, train = spec.get("model"), spec.get("train", {})
    row.update(model=model, state=_state(run.status()), seed=train.get("seed"))
    # None for a fid.json damaged or made by something else: the run counts as not measured
    fid = run.fid_report(problems)
    _warn(warnings, run / RunDir.FID_REPORT, problems, "those values left out" if fid else "counted as not measured")
    protocol = measured_protocol(spec, fid)
    differing = protocol_differences(protocol)
    row["protocol"] = "thesis" if not differing else "differs: " + ", ".join(differing)
    row["protocol_values"] = protocol
    if model in MODELS:
        changes = differences(model, train, spec.get("architecture"))
        row["configuration"] = label(changes)
        row["changes"] = changes
        row["configuration_key"] = configuration_key(spec)
        # compared within one training length: a 4-epoch variant against the 4-epoch default, not the 200-epoch one
        row["context_key"] = configuration_key(spec, leave_out=(*(k for k in HYPERPARAMETERS if k != "epochs"), "seed"))
        # Only a run of the thesis' own configuration and protocol stands beside its Table 1 value.
        thesis = THESIS_TABLE1.get((model, row["configuration"])) if set(changes) <= set(THESIS_KEYS) else None
        if thesis and not differing:
            row["thesis_fid"], row["thesis_fid_std"] = thesis
    curve = run.metric_curve()  # measured during training ([eval] every) or after (--all-checkpoints)
    row["best_epoch"], row["last_measured_epoch"] = curve.get("best_epoch"), curve.get("last_epoch")
    row["best_epoch_by"] = curve.get("best_by")
    losses = run.losses(problems)
    _warn(warnings, run / RunDir.LOSSES, problems, "those lines left out")
    if losses:
        row["epochs"] = losses[-1]["epoch"]
        row["train_seconds"] = round(sum(e.get("seconds", 0) for e in losses), 2)
        row["images_per_s"] = round(sum(e.get("images_per_s", 0) for e in losses) / len(losses), 1)
    if fid:
        row.update(
            fid_mean=round(fid.fid_mean, 3),
            fid_std=round(fid.fid_std, 3),
            kid_mean=None if fid.kid_mean is None else round(fid.kid_mean, 5),
            standard_weights=fid.standard_weights,
            n_generated=fid.n_generated,
        )
        row["metrics"] = {"fid": fid.fid_mean, "kid": fid.kid_mean, "frd": None}
        if "mean" in (fid.frd or {}):
            row.update(frd_mean=round(fid.frd["mean"], 3), frd_std=round(fid.frd["std"], 3))
            row["metrics"]["frd"] = fid.frd["mean"]
        elif "error" in (fid.frd or {}):
            row["frd_unmeasurable"] = one_line(str(fid.frd["error"]), 300)
        values, unrounded = _one_question_numbers(fid, run_dir, problems)
        row.update(values)
        row["metrics"].update(unrounded)
        _warn(warnings, run / RunDir.FID_REPORT, problems, "those values left out")
        laddered = _with_verdicts(fid, spec)
        row["ladder_fails"] = ",".join(m for m in LADDERED if failed_ladder(laddered, m)) or None
        row["assessment"] = best.assess(laddered)  # what the one rule of "best" needs of this run
    return ReportRow.model_validate(row).model_dump()


def _one_question_numbers(fid: Measurement, run_dir: Path, problems: list[str]) -> tuple[dict, dict]:
    """The row's values of the numbers that ask one question each (fidelity, diversity, memorisation) and
    its metrics' entries for them (unrounded), with what a reviewer must know of it (best.concerns), the protocol of
    those numbers in words and its memorisation figure. A value that is there but no finite number, or a
    figure that is not a PNG inside the run folder, goes into `problems` (fid.json comes from elsewhere)."""
    values = {key: fid.number(key) for key in QUESTION_OF if key not in ("fid", "kid", "frd")}
    spaces = (fid.memorisation or {}).get("spaces")
    spaces = spaces if isinstance(spaces, dict) else {}
    for key, value in values.items():
        if key.startswith("memorised_"):
            section, data = "memorisation", spaces.get(key.removeprefix("memorised_"))
        elif key == "ms_ssim_ratio":
            section, data = "ms_ssim", fid.ms_ssim
        elif key.endswith("_radiomics"):
            section, data = "prdc_radiomics", fid.prdc_radiomics
        else:
            section, data = "prdc", fid.prdc
        if value is None and isinstance(data, dict) and "error" not in data:  # there, but not a number
            problems.append(f"{section}: {key} is not a finite number")
    flagged = fid.memorised_spaces()
    memorised = None if flagged is None else bool(flagged) or fid.memorisation.get("memorised") is True
    pixels = values.get("memorised_pixels")
    row = {key: None if values.get(key) is None else round(values[key], 4) for key in SHOWN}
    row.update(
        memorised=memorised,
        memorised_spaces=", ".join(flagged) if flagged else None,
        memorised_pixels=None if pixels is None else round(pixels, 5),
        concerns="; ".join(best.concerns(fid)) or None,
        numbers_protocol=numbers_protocol(fid),
        memorisation_figure=_memorisation_figure(run_dir, fid.memorisation, problems),
    )
    return row, {**values, "memorised": memorised}


def _plain(value: object) -> str:
    """A protocol value from a record as short text: a whole or finite number, or a short text; "?" else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if (number := finite(value)) is not None:
        return f"{number:g}"
    return one_line(value, 80) if isinstance(value, str) and value else "?"


def numbers_protocol(fid: Measurement) -> str | None:
    """How the one-question numbers of a measurement were taken, in words (k, n, feature space, pairs, the
    memorisation threshold and rule); None where it has none of them."""
    parts = []
    if isinstance(prdc := fid.prdc, dict) and "error" not in prdc:
        network = prdc.get("network", prdc.get("space"))
        parts.append(
            f"precision, recall, density, coverage: k = {_plain(prdc.get('k'))} in {_plain(network)}'s feature "
            f"space ({_plain(prdc.get('dims'))}-d), generated n = {_plain(prdc.get('n_generated'))} vs real "
            f"n = {_plain(prdc.get('n_real'))}"
        )
    if isinstance(radiomic := fid.prdc_radiomics, dict):
        if "error" in radiomic:
            parts.append(f"in the radiomic space: unmeasurable ({_plain(radiomic['error'])})")
        else:
            parts.append(
                f"in the radiomic space: k = {_plain(radiomic.get('k'))}, {_plain(radiomic.get('features_used'))} "
                f"features, generated n = "
                f"{_plain(radiomic.get('n_generated_used'))} vs real n = {_plain(radiomic.get('n_real_used'))}"
            )
    if isinstance(ms_ssim := fid.ms_ssim, dict) and "error" in ms_ssim:
        parts.append(f"MS-SSIM: unmeasurable ({_plain(ms_ssim['error'])})")
    elif isinstance(ms_ssim, dict):
        protocol = ms_ssim.get("protocol") if isinstance(ms_ssim.get("protocol"), dict) else {}

        def pairs(side: str) -> str:  # the pairs drawn on one side (all of them where there are fewer)
            drawn = protocol.get(side) if isinstance(protocol.get(side), dict) else {}
            mode = f" ({_plain(drawn['pairs_mode'])})" if "pairs_mode" in drawn else ""
            return f"{_plain(drawn.get('pairs', ms_ssim.get('pairs')))} pairs{mode}"

        parts.append(
            f"MS-SSIM: {pairs('generated')} among the first {_plain(ms_ssim.get('n_generated'))} generated, "
            f"{pairs('real')} among the {_plain(ms_ssim.get('n_real'))} real images, "
            f"{_plain(protocol.get('scales'))} scales, window {_plain(protocol.get('window'))}"
        )
    if isinstance(memorisation := fid.memorisation, dict):
        spaces = memorisation.get("spaces") if isinstance(memorisation.get("spaces"), dict) else {}
        first = next((space for space in spaces.values() if isinstance(space, dict) and "error" not in space), {})
        names = [str(name) for name in spaces]
        parts.append(
            f"memorisation in {_plain(', '.join(names))}: nearer a training slice than the "
            f"{_plain(memorisation.get('quantile'))} quantile of the {_plain(first.get('baseline'))} nearest "
            f"distances; {_plain(first.get('rule'))}"
        )
    return one_line("; ".join(parts), 1500) if parts else None


def _memorisation_figure(run_dir: Path, memorisation: dict | None, problems: list[str]) -> str | None:
    """The path of the run's memorisation figure (memorisation.figure, relative to the run folder): a PNG file
    inside the run folder, reached through no symbolic link (heartjobs makes none there); None otherwise."""
    name = memorisation.get("figure") if isinstance(memorisation, dict) else None
    if name is None:
        return None
    relative = Path(name) if isinstance(name, str) and name and "\0" not in name else None
    if relative is None or relative.is_absolute() or ".." in relative.parts or relative.suffix != ".png":
        problems.append("memorisation: figure is not a .png path inside the run folder")
        return None
    path = Path(run_dir)
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            problems.append(f"memorisation: figure {one_line(name, 100)} is reached through a symbolic link")
            return None
    if not path.is_file():
        problems.append(f"memorisation: figure {one_line(name, 100)} is not a file in the run folder")
        return None
    return str(path)


def _warn(warnings: list[str], path: Path, problems: list[str], consequence: str) -> None:
    """One line for a file's problems (then cleared): the file, each field and why, what the report did."""
    if problems:
        warnings.append(one_line(f"{path}: {'; '.join(problems)}; {consequence}", 1000))
        problems.clear()


def _with_verdicts(fid: Measurement, spec: dict) -> Measurement:
    """The report's own verdicts, filled in from the ladder's memory for metrics that were measured before
    a ladder ran on their set (or by older code): a metric that failed is marked wherever it is shown."""
    ladder = dict(fid.ladder or {})
    space = {
        "weights_sha256": fid.weights.get("sha256"),
        "dims": fid.dims,
        "frd_version": (fid.frd or {}).get("version"),
    }
    # FID, KID, FRD, and every other number the measurement holds (the ladder's memory has one line per number)
    measured = [key for key in numbers() if key in ("fid", "kid", "frd") or any(key in r for r in fid.repeats)]
    for key in measured:
        if ladder.get(key) is None:
            ladder[key] = verdicts.lookup(spec.get("data", {}).get("content_hash"), key, **space)
    return fid.model_copy(update={"ladder": ladder})


def _state(status: Status) -> str:
    """A run's state as the report shows it: "running" only while its process lives (a run whose process
    was killed outright still says "running" in its status.json), "evaluating" while it is being measured,
    and "trained, measurement pending" between its training and its measurement (a queue worker's --overlap)."""
    state = status.state or "unknown"
    if state == "running" and not liveness.alive(status.process(), stale_after=RUN_DEAD_AFTER_S):
        return "died"
    if state == "running" and status.phase == "evaluating":
        return "evaluating"
    if state == "trained":
        return "trained, measurement pending"
    return state


def collect(root: Path, expected: list[str] | None = None, warnings: list[str] | None = None) -> list[dict]:
    """One row per job: its newest run folder, or, while that one is unfinished, the newest finished one
    (its state cell names the newer one: "done; v0003 running"); jobs in `expected` without any run show
    as missing. What a run folder holds that cannot be read (a foreign or partial file) is left out, and
    said in `warnings`, one line per file naming its fields: one bad run never stops the report."""
    warnings = [] if warnings is None else warnings
    root = Path(root)
    jobs = sorted(p.name for p in root.iterdir() if p.is_dir() and versions(p)) if root.is_dir() else []
    names = list(expected or []) + [j for j in jobs if j not in (expected or [])]
    rows = []
    for name in names:
        found = versions(root / name)
        newest = found[-1] if found else None
        finished = next((v for v in reversed(found) if RunDir(v).status().state == "done"), None)
        if newest is not None and finished is not None and finished != newest:
            row = _row(name, finished, warnings)
            if row["state"] != UNREADABLE:
                row["state"] = f"done; {newest.name} {_state(RunDir(newest).status())}"
            rows.append(row)
        else:
            rows.append(_row(name, newest, warnings))
    return rows


def _fmt_mean(mean, std) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f}"


def number_title(key: str) -> str:
    """A one-question number's column title, led by its question and naming a space other than the feature
    network's: "fidelity: precision", "diversity: recall (radiomic)"."""
    if key.endswith("_radiomics"):
        return f"{QUESTION_OF[key]}: {key.removesuffix('_radiomics')} (radiomic)"
    return f"{QUESTION_OF[key]}: {NUMBER_TITLES.get(key, key)}"


NUMBER_HEADER = [*map(number_title, SHOWN), "memorisation"]
HEADER = [
    "job", "model", "configuration", "state", "FID", "KID", "FRD", *NUMBER_HEADER, "epochs", "train s", "img/s",
    "standard weights", "protocol", "thesis FID",
]  # fmt: skip
LEGEND = (
    "Beside FID, KID and FRD (which fold both questions into one number), each number asks one question, "
    f"named in its column: fidelity ({QUESTIONS['fidelity']}): precision and density; diversity "
    f"({QUESTIONS['diversity']}): recall and coverage (k-NN manifolds in the feature network's space, "
    "Kynkäänniemi et al. 2019, Naeem et al. 2020; higher is better, about 1 for a sample of the real set; "
    "`(radiomic)`: the same in the radiomic space, FRD's z-scored radiomic features), and "
    "MS-SSIM gen/real (the mean MS-SSIM of random generated pairs over that of random real pairs, Odena et al. "
    f"2017; above 1: less varied than the real set); memorisation ({QUESTIONS['memorisation']}): `memorised` "
    "and the spaces where the test flagged it, else `no` and the fraction of generated images nearer a "
    "training slice (in pixels) than the nearest 1 % (the memorisation quantile) of real slices are. Means over "
    'repeats; their k, n, feature space and pairs per run under "Fidelity, diversity and memorisation: '
    'protocol". '
)


def number_cell(value: float | None, key: str, failed: list[str]) -> str:
    """A one-question number as text, marked where its ladder verdict failed."""
    if value is None:
        return "-"
    text = f"{value:.2f}" if key == "ms_ssim_ratio" else f"{value:.3f}"
    return text + (f" {FAILS_LADDER_MARK}" if key in failed else "")


def memorisation_cell(row: dict, failed: list[str]) -> str:
    """ "memorised: pixels, inception" (the spaces flagged), or "no (pixels 0.20 %)" (the pixel-space fraction);
    a space whose memorisation number failed the ladder is marked."""
    if row["memorised"] is None:
        return "-"

    def mark(space: str) -> str:
        return f" {FAILS_LADDER_MARK}" if f"memorised_{space}" in failed else ""

    if row["memorised"]:
        spaces = (row["memorised_spaces"] or "").split(", ")
        return "memorised: " + (", ".join(f"{s}{mark(s)}" for s in spaces if s) or "flagged")
    pixels = row["memorised_pixels"]
    return "no" if pixels is None else f"no (pixels {100 * pixels:.2f} %{mark('pixels')})"


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def cells(row: dict) -> list[str]:
    """One row of the summary table as text, in HEADER's order; a value whose metric failed the validity
    ladder carries FAILS_LADDER_MARK."""
    r = row
    failed = (r["ladder_fails"] or "").split(",")
    fid, kid, frd = (metric_cell(r, m) for m in ("fid", "kid", "frd"))
    one_question = [*(number_cell(r[key], key, failed) for key in SHOWN), memorisation_cell(r, failed)]
    values = [
        r["job"], r["model"] or "-", r["configuration"] or "-", r["state"], fid, kid, frd, *one_question,
        _epochs_cell(r), r["train_seconds"] or "-", r["images_per_s"] or "-", _yes_no(r["standard_weights"]),
        r["protocol"] or "-", _fmt_mean(r["thesis_fid"], r["thesis_fid_std"]),
    ]  # fmt: skip
    return [str(v) for v in values]


def metric_cell(row: dict, metric: str) -> str:
    """FID, KID or FRD of a row as text: mean ± std over repeats (KID: its mean), marked where the metric
    failed the validity ladder; "unmeasurable" for an FRD without a value; "-" where not measured."""
    if metric == "frd" and row.get("frd_unmeasurable"):
        return "unmeasurable"
    mean = row[f"{metric}_mean"]
    if mean is None:
        return "-"
    text = f"{mean:.4f}" if metric == "kid" else _fmt_mean(mean, row[f"{metric}_std"])
    return text + (f" {FAILS_LADDER_MARK}" if metric in (row["ladder_fails"] or "").split(",") else "")


def _epochs_cell(row: dict) -> str:
    """The epochs trained, and where FID was measured along the way, its best epoch: GANs often peak early."""
    if row["epochs"] is None:
        return "-"
    if row["best_epoch"] is None:
        return str(row["epochs"])
    by = (row.get("best_epoch_by") or "fid").upper()
    if row["best_epoch"] == row["last_measured_epoch"]:
        return f"{row['epochs']} (best {by} at the last measured, {row['best_epoch']})"
    return f"{row['epochs']} (best {by} at {row['best_epoch']}, not the last measured, {row['last_measured_epoch']})"


def data_sources(rows: list[dict]) -> list[dict]:
    """The prepared sets the runs trained on, as each run's env.json records them (one entry per folder and
    content hash: its folder, the jobs, its image size, the phantom's kind for a set prepared from one, and for a
    set `data fetch` made, the dataset, DOI, licence and citation).
    env.json is read as data from elsewhere: what is not shaped like heartjobs' record is left out."""
    found: dict[str, dict] = {}
    for row in rows:
        if not row.get("run_dir"):
            continue
        data = atomic.read_json(Path(row["run_dir"]) / RunDir.ENV).get("data")
        if not isinstance(data, dict) or not isinstance(data.get("content_hash"), str):
            continue
        prepared = str(data.get("prepared"))
        entry = found.setdefault(
            f"{prepared}\0{data['content_hash']}",
            {"prepared": prepared, "content_hash": data["content_hash"], "jobs": []},
        )
        entry["jobs"].append(row["job"])
        phantom, size = data.get("phantom"), data.get("image_size")
        if isinstance(phantom, dict) and isinstance(phantom.get("kind"), str):
            kind = phantom["kind"]  # shown in the report: a word, or not what heartjobs records
            entry["phantom"] = kind if kind.isascii() and kind.isalnum() and len(kind) <= 20 else "unknown"
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            entry["image_size"] = size
        provenance = data.get("provenance")
        if isinstance(provenance, dict):
            entry["dataset"] = {k: str(provenance.get(k)) for k in ("name", "doi", "licence", "citation")}
    return list(found.values())


def data_markdown(sources: list[dict]) -> str:
    """The report's "Data" section: what each set is and, for the Atlas' hearts, how to cite it."""
    lines = [f"- `{markdown_cell(s['prepared'])}` {markdown_cell(page.prepared_set_text(s))}" for s in sources]
    return "\n## Data\n\n" + "\n".join(lines) + "\n" if lines else ""


def unmeasurable_markdown(rows: list[dict]) -> str:
    """Why each run's FRD has no value: a reason, never a -inf in a table."""
    lines = [
        f"- {markdown_cell(r['job'])}: {markdown_cell(r['frd_unmeasurable'])}" for r in rows if r["frd_unmeasurable"]
    ]
    return "\n## FRD unmeasurable\n\n" + "\n".join(lines) + "\n" if lines else ""


def markdown(rows: list[dict]) -> str:
    return markdown_table(HEADER, [cells(r) for r in rows])


def ranking(rows: list[dict]) -> best.Choice:
    """What the best runs follow: heartjobs.store.best's one rule over the measured runs."""
    return best.choose([r["assessment"] for r in rows if r["assessment"] is not None])


def best_runs(rows: list[dict], metric: str | None) -> list[dict]:
    """Each model's best run by `metric` (the lowest mean; the earliest row of equals), in model order, with
    its fidelity, diversity and memorisation beside it and what a reviewer must know of it (best.concerns:
    collapsed, memorised). None best without a metric."""
    found: dict[str, dict] = {}
    for row in rows:
        value = (row["metrics"] or {}).get(metric) if metric and row["assessment"] else None
        if value is not None and (row["model"] not in found or value < found[row["model"]]["metrics"][metric]):
            found[row["model"]] = row
    keys = ("job", "configuration", "run_dir", "epochs", *SHOWN, "memorised", "memorised_spaces", "memorised_pixels")
    return [
        {
            "model": model,
            **{key: row[key] for key in keys},
            "by": metric,
            "value": row["metrics"][metric],
            "ladder_fails": row["ladder_fails"],
            "concerns": row["concerns"].split("; ") if row["concerns"] else [],
            "memorisation_figure": row["memorisation_figure"],
        }
        for model, row in sorted(found.items(), key=lambda item: str(item[0]))
    ]


# The best runs' numbers: precision, recall and coverage in both spaces, the MS-SSIM ratio.
BEST_NUMBERS = (
    "precision", "precision_radiomics", "recall", "coverage", "recall_radiomics", "coverage_radiomics",
    "ms_ssim_ratio",
)  # fmt: skip
BEST_HEADER = [
    "model", "best run", "configuration", "by", "value", *map(number_title, BEST_NUMBERS), "memorisation", "flagged",
]  # fmt: skip


def best_cells(entry: dict) -> list[str]:
    """One best run as text, in BEST_HEADER's order."""
    failed = (entry["ladder_fails"] or "").split(",")
    by = entry["by"]
    return [
        str(entry["model"]), entry["job"], entry["configuration"] or "-", by.upper(),
        f"{entry['value']:.4f}" if by == "kid" else f"{entry['value']:.2f}",
        *(number_cell(entry[key], key, failed) for key in BEST_NUMBERS),
        memorisation_cell(entry, failed), "; ".join(entry["concerns"]) or "no",
    ]  # fmt: skip


def best_markdown(entries: list[dict]) -> str:
    """The report's "Best per model" section: each best run with its fidelity, diversity and memorisation."""
    if not entries:
        return ""
    rule = f"Flagged (never passed over): {best.CONCERNS_RULE}."
    return "\n## Best per model\n\n" + rule + "\n\n" + markdown_table(BEST_HEADER, list(map(best_cells, entries)))


def protocols(rows: list[dict]) -> list[tuple[list[str], str]]:
    """The runs that share each protocol of the one-question numbers: [(jobs, protocol in words)]."""
    found: dict[str, list[str]] = {}
    for row in rows:
        if row.get("numbers_protocol"):
            found.setdefault(row["numbers_protocol"], []).append(row["job"])
    return [(jobs, text) for text, jobs in found.items()]


PROTOCOL_TITLE = "Fidelity, diversity and memorisation: protocol"


def protocols_markdown(rows: list[dict]) -> str:
    lines = [f"- {markdown_cell(', '.join(jobs))}: {markdown_cell(text)}" for jobs, text in protocols(rows)]
    return f"\n## {PROTOCOL_TITLE}\n\n" + "\n".join(lines) + "\n" if lines else ""


def write_report(
    root: Path, expected: list[str] | None = None, warnings: list[str] | None = None
) -> tuple[list[dict], list[Path]]:
    """Write summary.md/.csv/.json and the figures into `root`; returns the rows and the files written.
    What could not be read in the run folders is left out and added to `warnings` (collect), and kept in
    summary.json."""
    root = Path(root)
    if not root.is_dir():
        raise HeartjobsError(f"{root}: no such folder (nothing has run into it yet?)")
    # A folder where the report writes a file: a job from before such names were refused (or a folder
    # made by hand); refused before anything is written, rather than failing halfway through.
    for path in sorted(root.iterdir()):
        if is_report_output(path.name) and path.is_dir() and not path.is_symlink():
            raise HeartjobsError(
                f"{path}: a folder where `heartjobs report` writes its file {path.name}; rename or move it "
                "(job names like this are reserved)"
            )
    warnings = [] if warnings is None else warnings
    rows = collect(root, expected, warnings)
    configs = configurations.configurations(rows)
    choice = ranking(rows)
    metric = choice.metric
    written = [root / name for name in SUMMARY_FILES]  # .md, .csv, .json
    one_question = any(r["memorised"] is not None or any(r[k] is not None for k in SHOWN) for r in rows)
    note = (
        "FID, KID, FRD: mean ± std over repeats. FRD: Fréchet Radiomics Distance (frd-score v1, log scale). "
        + (LEGEND if one_question else "")
        + f"{FAILS_LADDER_MARK}: the number {FAILS_LADDER} (`heartjobs ladder`) on this data and feature space. "
        "`standard weights` no: an Inception other than pytorch-fid's file; such FID and KID are not comparable "
        "to the thesis' values. A thesis FID stands beside a run only when its protocol (weights, n, repeats, "
        "dims, normalize, real set, epochs, precision) is the thesis'; `protocol` names what differs. "
        + (
            f"Best runs (figures) {choice.describe()}."
            if metric
            else f"No best runs: no metric is measured for every run and trusted ({choice.describe()})."
        )
        + "\n\n"
    )
    text = "# heartjobs summary\n\n" + note + markdown(rows)
    if any(c["n"] > 1 for c in configs):  # a study with repeated runs: its configurations, over seeds
        text += (
            "\n## Configurations over seeds\n\n"
            + configurations.NOTE
            + "\n\n"
            + configurations.markdown(configs, FAILS_LADDER_MARK)
        )
    best_entries = best_runs(rows, metric)
    text += best_markdown(best_entries)
    text += protocols_markdown(rows)
    text += unmeasurable_markdown(rows)
    sources = data_sources(rows)
    text += data_markdown(sources)
    atomic.write_bytes(written[0], text.encode())
    atomic.write_bytes(written[1], csv_text(COLUMNS, rows).encode())
    Summary(
        rows=rows,
        configurations=configs,
        statistics={"note": configurations.NOTE, "confidence": 0.95, "test": TEST},
        thesis_protocol=THESIS_PROTOCOL,
        best_by=metric,
        best_choice=choice.describe(),
        best=best_entries,
        note=note.strip(),
        warnings=warnings,
        prepared_sets=sources,
    ).write(written[2])
    drawn = figures.figures(root, rows, configs, best_entries)
    written_page = page.write_page(
        root,
        rows,
        configs,
        drawn,
        note=note.strip(),
        mark=FAILS_LADDER_MARK,
        header=HEADER,
        cells=cells,
        prepared_sets=sources,
        best=(BEST_HEADER, [best_cells(e) for e in best_entries], best_entries, best.CONCERNS_RULE),
        protocols=protocols(rows),
        protocols_title=PROTOCOL_TITLE,
    )
    written += [*drawn, written_page]
    return rows, written
