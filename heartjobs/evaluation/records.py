"""Where a measurement goes: fid.json, metrics.jsonl and evals/ of a run folder, and the one-line
console summary. Each record names the snapshot it measured and carries its protocol, and, when it was
measured against another prepared set than the run's own, that set.
"""

from __future__ import annotations

from pathlib import Path

from heartjobs import atomic
from heartjobs.evaluation.radiomics import DEFAULT_BACKEND, describe_difference
from heartjobs.hashing import sha256_json
from heartjobs.records import Measurement
from heartjobs.spec.defaults import EVAL_LATER_SETTINGS
from heartjobs.spec.schema import EvalSection, ResolvedSpec
from heartjobs.store.checkpoint import Snapshot
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.rundir import RunDir
from heartjobs.store.status import now_iso

FAILS_LADDER = "fails the validity ladder"


def evaluation_record(
    run: RunDir, spec: ResolvedSpec, snapshot: Snapshot, result: dict, against: PreparedSet | None = None
) -> Measurement:
    """A measurement (heartjobs.evaluation.driver.measure's result) with what it measured; `against`: the
    real set it was measured against, when not the run's own."""
    other = {}
    if against is not None:
        other["against"] = {"prepared": str(against.path), "content_hash": against.content_hash, "count": against.count}
    return Measurement(
        metric="fid",
        run=str(run.path),
        job=spec.name,
        spec_hash=spec.spec_hash,
        snapshot={"file": snapshot.file, "epoch": snapshot.epoch},
        **result,
        **other,
        time=now_iso(),
    )


# [eval] keys added after settings were first hashed, with their defaults
ADDED_SINCE = {"frd_drop_degenerate": False, **EVAL_LATER_SETTINGS}


def settings_hash(settings: EvalSection, against: str | None = None) -> str:
    """What a measurement's value depends on, hashed: not when or how often it is taken, nor where copies of
    its images go. `against`: the content hash of the real set measured against when it is not the run's
    own; such a measurement is another setting, so it never joins the own set's curve or best checkpoint."""
    values = settings.model_dump(mode="json", exclude=set(EvalSection.NOT_MEASURED))
    values["fid"] = values.pop("measure")  # hashed under its first name, so a curve's earlier records still match
    for key, default in ADDED_SINCE.items():  # at its default, a later setting hashes as before it existed
        if values.get(key) == default:
            values.pop(key)
    if against is not None:
        values["against"] = against
    return sha256_json(values)[:8]


def write_record(run: RunDir, record: Measurement, settings: EvalSection, own: bool) -> Path:
    """The run's own measurement (its final generator with the spec's own settings) goes to fid.json; any
    other snapshot, settings or real set to evals/<snapshot>_<settings hash>.json (with _pyradiomics when
    FRD's features came from the reference backend: the same setting, a record of its own beside the
    default backend's). Every record is also appended to metrics.jsonl, with the hash of the settings it
    was measured with (records of one curve share it; one against another set has its own). Returns
    where the record went."""
    tag = settings_hash(settings, (record.against or {}).get("content_hash"))
    record.settings_hash = tag
    if own:
        path = run / RunDir.FID_REPORT
    else:
        name = record.snapshot["file"].replace("/", "_").removesuffix(".pt")
        backend = "" if settings.frd_backend == DEFAULT_BACKEND or not settings.frd else f"_{settings.frd_backend}"
        path = run / RunDir.EVALS / f"{name}_{tag}{backend}.json"
    record.write(path)
    atomic.append_lines(run / RunDir.METRICS, [record.line()])  # one line per evaluation
    return path


def failed_ladder(report: Measurement, metric: str) -> bool:
    """Whether `heartjobs ladder` found `metric` invalid on this set and feature space (report.ladder)."""
    verdict = (report.ladder or {}).get(metric)
    return isinstance(verdict, dict) and not verdict.get("passes", True)


def summary_line(report: Measurement) -> str:
    """FID, KID and FRD with their protocol, any metric the validity ladder failed labelled so, and what
    differs most, on one line; led by "against <set> (<content hash>)" when measured against another set
    than the run's own."""

    def mark(metric: str) -> str:
        return f" [{FAILS_LADDER}]" if failed_ladder(report, metric) else ""

    text = f"against {against_label(report.against)}: " if report.against else ""
    text += (
        f"FID {report.fid_mean:.3f} +- {report.fid_std:.3f}{mark('fid')} "
        f"(n={report.n_generated} x {len(report.repeats)}, real n={report.n_real}, dims {report.dims}, "
        f"{report.normalize})"
    )
    if report.kid_mean is not None:
        text += f"  KID {report.kid_mean:.5f} +- {report.kid_std:.5f}{mark('kid')}"
    if report.features == "radimagenet":
        text += "  [in RadImageNet ResNet-50's feature space: not comparable to published (Inception) FID]"
    elif not report.standard_weights:
        text += f"  [{report.weights.get('kind')} weights: not comparable to published FID]"
    frd = report.frd
    if frd and "error" in frd:
        text += f"  FRD unmeasurable: {frd['error'].removeprefix('FRD unmeasurable: ').removeprefix('FRD: ')}"
    elif frd:
        text += f"  FRD {frd['mean']:.3f} +- {frd['std']:.3f}{mark('frd')} ({frd['version']}, n={frd['n_generated']} x "
        text += f"{len(report.repeats)}, real n={frd['n_real']})"
        if frd["top_differences"]:
            text += "; generated: " + ", ".join(describe_difference(e) for e in frd["top_differences"][:2])
    beyond = beyond_fid_line(report)
    return text + (f"\n  {beyond}" if beyond else "")


def beyond_fid_line(report: Measurement) -> str:
    """Fidelity, diversity and memorisation apart, on one line with their protocol: PRDC in the feature
    network's space (and the radiomic one), MS-SSIM generated / real, memorisation's flag; each number
    whose ladder verdict failed labelled so. Empty for a record from before they were measured."""

    def mark(key: str) -> str:
        return f" [{FAILS_LADDER}]" if failed_ladder(report, key) else ""

    def mean(block: dict, key: str) -> str:
        value = (block.get(key) or {}).get("mean")
        return "?" if not isinstance(value, int | float) else f"{value:.3f}"

    parts = []
    for name, suffix, label in (("prdc", "", "features"), ("prdc_radiomics", "_radiomics", "radiomics")):
        block = getattr(report, name) or {}
        if "error" in block:
            parts.append(f"PRDC ({label}) unmeasurable: {block['error']}")
        elif block:
            space = f"{block.get('network', 'inception')} {block.get('dims')}-d" if not suffix else "radiomics"
            parts.append(
                f"fidelity: precision {mean(block, 'precision')}{mark('precision' + suffix)} density "
                f"{mean(block, 'density')}{mark('density' + suffix)}, diversity: recall {mean(block, 'recall')}"
                f"{mark('recall' + suffix)} coverage {mean(block, 'coverage')}{mark('coverage' + suffix)} "
                f"({space}, k={block.get('k')})"
            )
    ms_ssim = report.ms_ssim or {}
    if "error" in ms_ssim:
        parts.append(f"MS-SSIM unmeasurable: {ms_ssim['error']}")
    elif ms_ssim:
        parts.append(
            f"MS-SSIM generated/real {mean(ms_ssim, 'ratio')}{mark('ms_ssim_ratio')} "
            f"({mean(ms_ssim, 'generated')} / {mean(ms_ssim, 'real')}, {ms_ssim.get('pairs')} pairs of "
            f"n={ms_ssim.get('n_generated')})"
        )
    memorisation = report.memorisation or {}
    if memorisation:
        spaces = memorisation.get("spaces") or {}
        flagged = [space for space, block in spaces.items() if isinstance(block, dict) and block.get("memorised")]
        pixels = spaces.get("pixels") or {}
        share = f", {mean(pixels, 'fraction')} of images in pixels" if "fraction" in pixels else ""
        # the feature network's space is keyed "inception" whichever network it is: named as measured
        names = {"inception": report.features}
        flagged = [names.get(space, space) for space in flagged]
        verdict = f"MEMORISED in {', '.join(flagged)}" if flagged else "not memorised"
        measured = ", ".join(names.get(space, space) for space in spaces)
        parts.append(
            f"memorisation: {verdict} ({measured}; nearer a training slice than the nearest "
            f"{memorisation.get('quantile', 0.01):.0%} of real ones{share})"
        )
    return "  ".join(parts)


def against_label(against: dict) -> str:
    """The other real set of a record, as its summary names it: "ladaf-2021-17-256 (3f2a9c01b4e7)", its
    folder's name and the start of its content hash, so the number is never taken for the own set's."""
    name = Path(str(against.get("prepared", "?"))).name
    return f"{name} ({str(against.get('content_hash', '?'))[:12]})"
