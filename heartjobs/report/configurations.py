"""A study's configurations: the runs of one configuration (the same spec apart from job name and training
seed) taken together, each metric's mean, spread and 95 % interval over them, and each configuration set
against its model's default with Welch's t-test. It reads the report's rows and writes nothing.

A configuration's reference ("its model's default") is the configuration of the same model, data and
measurement whose hyperparameters differ from the model's defaults in a strict subset of this one's
changes, the fewest; where two are equally close (a grid without its default cell), there is none.
"""

from __future__ import annotations

import json

from heartjobs.report.cells import markdown_table
from heartjobs.report.statistics import TEST, summarize, welch

METRICS = ("fid", "kid", "frd")
# The numbers that ask one question each (fidelity, diversity, memorisation), summarised over runs too:
# shown as compact cells, one per question and space (PRDC's radiomic space beside the feature network's).
NUMBERS = (
    "precision", "density", "precision_radiomics", "density_radiomics", "recall", "coverage", "recall_radiomics",
    "coverage_radiomics", "ms_ssim_ratio", "memorised_pixels",
)  # fmt: skip
GROUPS = {
    "fidelity": ("precision", "density"),
    "fidelity (radiomic)": ("precision_radiomics", "density_radiomics"),
    "diversity": ("recall", "coverage", "ms_ssim_ratio"),
    "diversity (radiomic)": ("recall_radiomics", "coverage_radiomics"),
}
NOTE = (
    "Configurations: the runs of one configuration with different training seeds taken together (one run per "
    "seed). mean ± std over runs (each run's value is its mean over its FID repeats), 95 % CI from the t "
    f"distribution. vs default: the difference to the model's default configuration, its 95 % CI and p by {TEST}; "
    "a p below 0.05 says the difference is unlikely under seed noise alone (no correction for the many "
    "comparisons of a study: among 20 variants without any effect, one such p is expected). The thesis' Table 1 std is "
    "between FID repeats of one training, not between trainings: it cannot tell seed noise from an effect. "
    "fidelity, diversity: the mean over runs of each number the column names, in its order (in the feature "
    "network's space; (radiomic): in the radiomic space); memorisation: the runs in which memorisation was flagged."
)


def configurations(rows: list[dict]) -> list[dict]:
    """One entry per configuration with its runs, statistics and reference: per model (in the rows' order)
    the defaults first, then by how many hyperparameters differ, then in the rows' order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("configuration_key"):
            groups.setdefault(row["configuration_key"], []).append(row)
    models = list(dict.fromkeys(members[0]["model"] for members in groups.values()))
    found = [_configuration(key, members) for key, members in groups.items()]
    found = [
        c
        for _, c in sorted(
            enumerate(found), key=lambda ic: (models.index(ic[1]["model"]), len(ic[1]["changes"]), ic[0])
        )
    ]
    for config in found:
        reference = _reference(config, found)
        config["reference"] = reference["configuration"] if reference else None
        config["vs_reference"] = {
            metric: welch(_values(config, metric), _values(reference, metric)) for metric in METRICS
        } if reference else {}  # fmt: skip
    return found


def _configuration(key: str, members: list[dict]) -> dict:
    runs, seeds, repeated = [], set(), []
    for row in members:
        if row.get("metrics") is None:
            continue
        if row["seed"] in seeds:  # the same configuration and seed again: the same training, not a new sample
            repeated.append(row["job"])
            continue
        seeds.add(row["seed"])
        runs.append({"job": row["job"], "seed": row["seed"], "run_dir": row["run_dir"], **row["metrics"]})
    # what labels the configuration: a measured run where there is one (an unmeasured one says "not measured")
    first = next((row for row in members if row.get("metrics") is not None), members[0])
    config = {
        "key": key,
        "context": first["context_key"],
        "model": first["model"],
        "configuration": first["configuration"],
        "changes": first["changes"],
        "jobs": [row["job"] for row in members],
        "runs": runs,
        "n": len(runs),
        "same_seed_jobs_left_out": repeated,
        "protocol": first["protocol"],
        "protocol_values": first["protocol_values"],
        "standard_weights": first["standard_weights"],
        "ladder_fails": sorted({m for row in members for m in (row["ladder_fails"] or "").split(",") if m}),
        "thesis_fid": first["thesis_fid"],
        "thesis_fid_std": first["thesis_fid_std"],
    }
    for metric in (*METRICS, *NUMBERS):
        config[metric] = summarize(_values(config, metric))
    measured = [run["memorised"] for run in runs if run.get("memorised") is not None]
    config["memorised_runs"] = {"flagged": sum(measured), "of": len(measured)} if measured else None
    return config


def _values(config: dict, metric: str) -> list[float]:
    return [run[metric] for run in config["runs"] if run.get(metric) is not None]


def _items(changes: dict) -> set[tuple[str, str]]:
    return {(key, json.dumps(value)) for key, value in changes.items()}


def _reference(config: dict, found: list[dict]) -> dict | None:
    mine = _items(config["changes"])
    candidates = [
        other
        for other in found
        if other is not config
        and other["model"] == config["model"]
        and other["context"] == config["context"]
        and _items(other["changes"]) < mine
    ]
    if not candidates:
        return None
    fewest = min(len(c["changes"]) for c in candidates)
    closest = [c for c in candidates if len(c["changes"]) == fewest]
    return closest[0] if len(closest) == 1 else None


def _interval(summary: dict | None, digits: int) -> str:
    if summary is None:
        return "-"
    if summary["std"] is None:
        return f"{summary['mean']:.{digits}f} (1 run)"
    low, high = summary["ci95"]
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _comparison(result: dict | None, digits: int) -> str:
    if result is None:
        return "-"
    low, high = result["ci95"]
    p = "p -" if result["p"] is None else "p < 0.001" if result["p"] < 0.001 else f"p {result['p']:.3f}"
    return f"{result['difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}], {p}"


DIGITS = {"fid": 2, "kid": 4, "frd": 2}
# a group's titles; the space is named once, with its question ("diversity (radiomic): recall / coverage")
TITLES = {"ms_ssim_ratio": "MS-SSIM gen/real"} | {
    f"{key}_radiomics": key for key in ("precision", "density", "recall", "coverage")
}
HEADER = [
    "model", "configuration", "runs", "seeds", "FID mean ± std [95 % CI]", "KID", "FRD", "vs default",
    "ΔFID [95 % CI], p", "ΔFRD [95 % CI], p",
    *(f"{question}: {' / '.join(TITLES.get(k, k) for k in keys)}" for question, keys in GROUPS.items()),
    "memorisation: runs flagged", "thesis FID (std over FID repeats)", "protocol",
]  # fmt: skip


def _group(config: dict, keys: tuple[str, ...], flagged) -> str:
    """The means over runs of `keys`, "0.71 / 0.93"; "-" for a number not measured."""
    means = [(key, (config.get(key) or {}).get("mean")) for key in keys]
    if all(mean is None for _, mean in means):
        return "-"
    texts = [flagged(k, "-" if m is None else f"{m:.2f}" if k == "ms_ssim_ratio" else f"{m:.3f}") for k, m in means]
    return " / ".join(texts)


def _memorised(config: dict) -> str:
    counts = config.get("memorised_runs")
    return "-" if counts is None else f"{counts['flagged']} of {counts['of']}"


def cells(config: dict, mark: str) -> list[str]:
    """One configuration as the table's text cells, in HEADER's order; `mark` after a metric that failed
    the validity ladder."""

    def flagged(metric: str, text: str) -> str:
        return f"{text} {mark}" if metric in config["ladder_fails"] and text != "-" else text

    thesis = "-" if config["thesis_fid"] is None else f"{config['thesis_fid']:.2f} ± {config['thesis_fid_std']:.2f}"
    vs = config["vs_reference"]
    return [
        config["model"] or "-",
        config["configuration"] or "-",
        str(config["n"]),
        ",".join(str(run["seed"]) for run in config["runs"]) or "-",
        *(flagged(m, _interval(config[m], DIGITS[m])) for m in METRICS),
        config["reference"] or "-",
        flagged("fid", _comparison(vs.get("fid"), DIGITS["fid"])),
        flagged("frd", _comparison(vs.get("frd"), DIGITS["frd"])),
        *(_group(config, keys, flagged) for keys in GROUPS.values()),
        _memorised(config),
        thesis,
        config["protocol"] or "-",
    ]


def markdown(configs: list[dict], mark: str) -> str:
    return markdown_table(HEADER, [cells(c, mark) for c in configs])
