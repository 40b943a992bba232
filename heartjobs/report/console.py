"""The summary a person reads in a terminal (`heartjobs report`): one compact row per job (model,
configuration, the metric the report ranks by with its spread, the collapse and memorisation flags where
those numbers were measured, epochs, training time) and, folded into one line under it, how the runs'
protocol differs from the thesis'. summary.md and report.html keep every column; this only reads the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from heartjobs.report.summary import SHOWN, metric_cell, ranking
from heartjobs.report.thesis import THESIS_IMAGE_SIZE, THESIS_PROTOCOL
from heartjobs.spec.sweep import format_value
from heartjobs.store import best

# Each protocol value in plain words, as the line under the table names what differs from the thesis'.
_WORDS = {
    "features": "{} features",
    "n_generated": "{} generated images",
    "repeats": "{} repeats",
    "dims": "{}-d features",
    "normalize": "normalize {}",
    "n_real": "{} real images",
    "epochs": "{} epochs",
    "tf32": "tf32 {}",
    "bf16": "bf16 {}",
}


@dataclass(frozen=True)
class Compact:
    """The compact table (its header and text rows) and the lines under it."""

    header: list[str]
    rows: list[list[str]]
    notes: list[str]


def compact(rows: list[dict], page_written: bool = False, sources: list[dict] = ()) -> Compact:
    """The report's rows as the compact table: the metric is the one the report's best runs follow
    (heartjobs.store.best's one rule); with none trusted, the first one measured, said so in its title.
    `sources`: the prepared sets the runs trained on (report.summary.data_sources), for the protocol line."""
    choice = ranking(rows)
    metric = choice.metric or next(
        (m for m in best.ORDER if any(r[f"{m}_mean"] is not None for r in rows)), best.ORDER[0]
    )
    title = f"{metric.upper()} (mean ± std)" if choice.metric else f"{metric.upper()} (not trusted)"
    flags = any(_has_numbers(r) for r in rows)
    header = ["model", "configuration", title, *(["flags"] if flags else []), "epochs", "time"]
    labels = [(r["model"], r["configuration"]) for r in rows]
    table = []
    for row in rows:
        configuration = row["configuration"] or row["job"]  # a job without a readable run: its name
        if row["configuration"] and labels.count((row["model"], row["configuration"])) > 1 and row["seed"] is not None:
            configuration += f", seed {row['seed']}"  # repeats of one configuration
        value = metric_cell(row, metric)
        if value == "-":
            value = "not measured" if (row["state"] or "").startswith("done") else row["state"] or "-"
        table.append(
            [
                row["model"] or "-",
                configuration,
                value,
                *([_flags(row)] if flags else []),
                _epochs(row),
                _duration(row["train_seconds"]),
            ]
        )
    notes = [protocol_line(rows, page_written, sources)]
    if choice.passed_over:  # why the column is not FID (or why nothing is ranked)
        notes.append(f"ranked {choice.describe()}" if choice.metric else f"not ranked: {choice.describe()}")
    return Compact(header, table, notes)


def _has_numbers(row: dict) -> bool:
    return row["memorised"] is not None or any(row[key] is not None for key in SHOWN)


def _flags(row: dict) -> str:
    """What best.concerns found, by name only ("collapsed; memorised"); "no" where nothing; "-" unmeasured."""
    if not _has_numbers(row):
        return "-"
    if not row["concerns"]:
        return "no"
    return "; ".join(concern.split(":")[0] for concern in row["concerns"].split("; "))


def _epochs(row: dict) -> str:
    if row["epochs"] is None:
        return "-"
    best_epoch, last = row["best_epoch"], row["last_measured_epoch"]
    return str(row["epochs"]) + (f" (best {best_epoch})" if best_epoch is not None and best_epoch != last else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def protocol_line(rows: list[dict], page_written: bool = False, sources: list[dict] = ()) -> str:
    """How the measured runs' data and protocol differ from the thesis' (a phantom, an image size other
    than 256 px; each row's protocol_values against THESIS_PROTOCOL), in plain words on one line: "not
    comparable to Table 1: heart phantom, 64 px, random Inception weights, 500 generated images; see
    report.html"."""
    measured = [r for r in rows if r["protocol_values"] and "dims" in r["protocol_values"]]
    if not measured:
        return "nothing measured yet: no comparison with Table 1"
    data_of = {job: source for source in sources for job in source["jobs"]}
    # a run trained on other data than the thesis' heart at 256 px differs, whatever its protocol
    differing = [r for r in measured if r["protocol"] != "thesis" or _data_words([data_of.get(r["job"], {})])]
    if not differing:
        return "measured as the thesis was: comparable to Table 1"
    some = "" if len(differing) == len(measured) else f" ({len(differing)} of {len(measured)} runs)"
    items = _data_words([data_of[r["job"]] for r in differing if r["job"] in data_of])
    for key, thesis in THESIS_PROTOCOL.items():
        raw = {v for r in differing if (v := r["protocol_values"].get(key)) != thesis}
        numbers = sorted(v for v in raw if isinstance(v, int | float))  # 50/350/550 epochs, not as text
        values = [format_value(v) for v in numbers] + sorted(format_value(v) for v in raw if v not in numbers)
        if not values:
            continue
        if key == "standard_weights":  # the kind of weights, as best.distrust names it ("random Inception weights")
            kinds = {
                why
                for r in differing
                if (why := ((r["assessment"] or {}).get("fid") or {}).get("distrust") or "").endswith(
                    "Inception weights"
                )
            }
            items.append(", ".join(sorted(kinds)) or "non-standard Inception weights")
        else:
            words = _WORDS.get(key, key + " {}").format("/".join(values))
            items.append(words[:-1] if values == ["1"] and words.endswith("s") else words)  # "1 repeat"
    see = "; see report.html" if page_written else ""
    return f"not comparable to Table 1{some}: {', '.join(items)}{see}"


def _data_words(sources: list[dict]) -> list[str]:
    """What sets the data apart from the thesis' heart at 256 px: "heart phantom" (a set prepared from
    `data phantom`'s slices), "64 px"."""
    kinds = sorted({s["phantom"] for s in sources if s.get("phantom")})
    sizes = sorted({s["image_size"] for s in sources if s.get("image_size") not in (None, THESIS_IMAGE_SIZE)})
    words = [f"{'/'.join(kinds)} phantom"] if kinds else []
    return words + ([f"{'/'.join(map(str, sizes))} px"] if sizes else [])
