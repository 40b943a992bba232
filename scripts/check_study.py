"""CI's check of `make study-smoke`: every job of the study over seeds finished and was measured during
training, and the report's per-configuration statistics agree with values computed here by hand from
the runs' own fid.json files: mean, std and 95 % t interval over the seeds, and each variant's difference
to its model's default with Welch's t-test (scipy's ttest_ind, equal_var=False, as the reference).

    python scripts/check_study.py artifacts/smoke-study jobs/smoke-study
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from heartjobs.spec.loading import parse_spec
from heartjobs.store.rundir import RunDir, versions


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check(root: Path, jobs: Path) -> list[str]:
    problems = []
    measured: dict[str, dict] = {}  # job -> fid.json
    for spec_file in sorted(jobs.glob("*.toml")):
        spec = parse_spec(spec_file)
        found = versions(root / spec.name)
        run = RunDir(found[-1]) if found else None
        if run is None or run.status().state != "done":
            problems.append(f"{spec.name}: no finished run under {root}")
            continue
        measured[spec.name] = run.fid_report().data()
        curve = run.metric_curve()
        if curve.get("epochs") != [2, 4] or not (run / RunDir.METRICS_PLOT).is_file():
            problems.append(f"{run}: not measured during training at epochs 2 and 4 (curve {curve.get('epochs')})")
        # during training only FID is measured, on untrained weights, which never chooses: no best.pt
        elif curve["best_epoch"] is not None or (run / RunDir.BEST).exists():
            problems.append(f"{run}: a best checkpoint chosen by {curve['best_by']}, which should choose nothing")
    summary = json.loads((root / "summary.json").read_text())
    configs = summary["configurations"]
    expected = _configurations_by_hand(jobs)
    found = sorted(tuple(r["seed"] for r in c["runs"]) for c in configs)
    if found != sorted(expected.values()):
        problems.append(
            f"summary.json: expected {len(expected)} configurations with seeds {sorted(expected.values())}, "
            f"found {[(c['configuration'], c['n']) for c in configs]}"
        )
    by_label = {(c["model"], c["configuration"]): c for c in configs}
    for c in configs:
        values = {m: [_metric(measured[r["job"]], m) for r in c["runs"]] for m in ("fid", "kid", "frd")}
        for metric, xs in values.items():
            n, mean, std = len(xs), float(np.mean(xs)), float(np.std(xs, ddof=1))
            half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
            got = c[metric]
            if not (close(got["mean"], mean) and close(got["std"], std) and close(got["ci95"][0], mean - half)
                    and close(got["ci95"][1], mean + half)):  # fmt: skip
                problems.append(f"{c['model']} {c['configuration']}: {metric} {got} != by hand {mean}, {std}, ±{half}")
        if c["reference"] is None:
            if "default" not in c["configuration"] and c["changes"] != {"epochs": 4}:
                problems.append(f"{c['model']} {c['configuration']}: no reference configuration")
            continue
        reference = by_label[(c["model"], c["reference"])]
        ref_values = [_metric(measured[r["job"]], "fid") for r in reference["runs"]]
        welch = stats.ttest_ind(values["fid"], ref_values, equal_var=False)
        got = c["vs_reference"]["fid"]
        if not (
            close(got["difference"], float(np.mean(values["fid"]) - np.mean(ref_values)))
            and close(got["p"], float(welch.pvalue))
        ):
            problems.append(
                f"{c['model']} {c['configuration']}: vs {c['reference']}: {got} != by hand p {welch.pvalue}"
            )
    page = (root / "report.html").read_text() if (root / "report.html").is_file() else ""
    if page.count('<tr id="') != len(configs):
        problems.append(f"{root / 'report.html'}: not one table row per configuration")
    for name in ("summary.md", "report_metrics_vs_epoch.png", "report_fid_vs_hyperparameters.png"):
        if not (root / name).is_file():
            problems.append(f"{root / name}: missing")
    return problems


def _configurations_by_hand(jobs: Path) -> dict[str, tuple[int, ...]]:
    """The job files grouped by what they train and measure, apart from the job's name and seed: each
    group's seeds, in order."""
    groups: dict[str, list[int]] = {}
    for spec_file in sorted(jobs.glob("*.toml")):
        spec = parse_spec(spec_file)
        seed = 0 if spec.train.seed is None else spec.train.seed  # a job that names no seed trains with 0
        record = spec.model_dump(mode="json")
        record["train"].pop("seed")
        record.pop("name")
        groups.setdefault(json.dumps(record, sort_keys=True), []).append(seed)
    return {key: tuple(sorted(seeds)) for key, seeds in groups.items()}


def _metric(report: dict, metric: str) -> float:
    return {"fid": report["fid_mean"], "kid": report.get("kid_mean"), "frd": (report.get("frd") or {}).get("mean")}[
        metric
    ]


if __name__ == "__main__":
    found = check(Path(sys.argv[1]), Path(sys.argv[2]))
    for problem in found:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"study check: {'ok' if not found else f'{len(found)} problems'}")
    sys.exit(1 if found else 0)
