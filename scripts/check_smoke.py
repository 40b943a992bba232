"""The smoke check of a queue run (CI: `make study-smoke`; also `make smoke`): every job has a finished run
with the artifacts a run promises, FRD beside FID with the ladder's verdicts, and the report's best picks
follow a metric that passed the ladder.

    python scripts/check_smoke.py artifacts/smoke-study jobs/smoke-study
    python scripts/check_smoke.py artifacts jobs/smoke
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from heartjobs.spec.loading import parse_spec
from heartjobs.store.rundir import RunDir, versions

REQUIRED = [RunDir.JOB_TOML, RunDir.RESOLVED, RunDir.ENV, RunDir.STATUS, RunDir.LOSSES, RunDir.LOSSES_PLOT,
            RunDir.REAL_GRID, RunDir.GENERATOR, RunDir.FID_REPORT, RunDir.METRICS]  # fmt: skip


def check(root: Path, jobs: Path) -> list[str]:
    problems = []
    for spec_file in sorted(jobs.glob("*.toml")):
        spec = parse_spec(spec_file)
        found = versions(root / spec.name)
        if not found:
            problems.append(f"{spec.name}: no run folder under {root}")
            continue
        run = RunDir(found[-1])
        missing = [name for name in REQUIRED if not (run / name).is_file()]
        if missing:
            problems.append(f"{run}: missing {', '.join(missing)}")
            continue
        if run.status().state != "done":
            problems.append(f"{run}: status is not done")
        losses = run.losses()
        if len(losses) != spec.train.epochs or not all(math.isfinite(e["d_loss"] + e["g_loss"]) for e in losses):
            problems.append(f"{run}: losses.jsonl has {len(losses)} epochs or non-finite losses")
        measured = run.fid_report()
        if measured is None:
            problems.append(f"{run}: fid.json is not a measurement")
            continue
        fid = measured.data()
        if not math.isfinite(fid["fid_mean"]) or fid["standard_weights"]:
            problems.append(
                f"{run}: fid.json: unexpected {fid['fid_mean']} / standard_weights {fid['standard_weights']}"
            )
        frd = fid.get("frd") or {}
        if not math.isfinite(frd.get("mean", math.nan)):
            problems.append(f"{run}: fid.json: no FRD")
        # fidelity, diversity and memorisation apart, each with its protocol, and no smoke GAN a copier
        for block, protocol in (
            ("prdc", "k"),
            ("prdc_radiomics", "k"),
            ("ms_ssim", "pairs"),
            ("memorisation", "spaces"),
        ):
            if protocol not in (fid.get(block) or {}):
                problems.append(f"{run}: fid.json: no {block} with its {protocol}: {fid.get(block)}")
        if (fid.get("memorisation") or {}).get("memorised") is not False:
            problems.append(f"{run}: fid.json: a smoke GAN flagged as memorising training slices")
        # a verdict per number of the measured metrics (the ladder ran every metric, in the jobs' spaces)
        said = fid.get("ladder") or {}
        if not {"fid", "kid", "frd", "precision", "recall", "memorised_pixels"} <= set(said) or None in said.values():
            problems.append(f"{run}: fid.json: the ladder's verdicts are not all there: {fid.get('ladder')}")
        if not run.sample_grids() or not list(run.checkpoints.glob("*.pt")):
            problems.append(f"{run}: no sample grids or checkpoints")
    for name in ("summary.md", "summary.csv", "summary.json", "ladder/ladder.json", "ladder/ladder.png"):
        if not (root / name).is_file():
            problems.append(f"{root / name}: missing")
    summary = (root / "summary.md").read_text() if (root / "summary.md").is_file() else ""
    for column in ("fidelity: precision", "diversity: recall", "diversity: MS-SSIM", "memorisation"):
        if column not in summary:
            problems.append(f"{root / 'summary.md'}: no {column!r} column")
    if not problems:
        best_by = json.loads((root / "summary.json").read_text())["best_by"]
        ladder = json.loads((root / "ladder" / "ladder.json").read_text())
        if best_by != "frd":  # untrained Inception weights never choose (heartjobs.store.best); FRD passes here
            problems.append(f"the report picks best runs by {best_by}, not FRD")
        elif not ladder["verdicts"][best_by]["passes"]:
            problems.append(f"the report picks best runs by {best_by}, which failed the ladder")
    return problems


if __name__ == "__main__":
    root, jobs = Path(sys.argv[1]), Path(sys.argv[2])
    problems = check(root, jobs)
    for problem in problems:
        print(f"smoke check: {problem}", file=sys.stderr)
    print(f"smoke check: {'FAILED' if problems else 'ok'} ({len(list(jobs.glob('*.toml')))} jobs)")
    sys.exit(1 if problems else 0)
