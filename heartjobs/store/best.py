"""What "best" means, in one rule for every place that picks one (best.pt and best_epoch during and after
training, `evaluate --all-checkpoints`, the report's best runs): the lowest value of the first metric in
ORDER that every measurement compared has and trusts. A metric is not trusted in a measurement when the
validity ladder failed it on that data and feature space, nor when it is an Inception metric on weights
other than pytorch-fid's standard file: those values are not comparable to published ones, and a ladder
pass is necessary, not sufficient (the README's demo: untrained FID passed the ladder at 192-d, yet ranked
a generator of pure noise best). When no metric is trusted, nothing is best, and the choice says why.

A best run is then checked on the numbers that ask one question each (issue 31; concerns): flagged, never
passed over, when it collapsed or memorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from heartjobs.records import Measurement

ORDER = ("fid", "frd")  # FID first: the thesis' metric, comparable to published values; then FRD
INCEPTION_METRICS = ("fid", "kid")


def value(measurement: Measurement, metric: str) -> float | None:
    """The measurement's mean of `metric`; None where it was not measured or is not a finite number."""
    frd = (measurement.frd or {}).get("mean")
    number = frd if metric == "frd" else getattr(measurement, f"{metric}_mean", None)
    finite = isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number)
    return float(number) if finite else None


def distrust(measurement: Measurement, metric: str) -> str | None:
    """Why `metric` is not to be trusted in this measurement; None when it is."""
    if value(measurement, metric) is None:
        return "unmeasurable" if "error" in (getattr(measurement, metric, None) or {}) else "not measured"
    version = (measurement.frd or {}).get("version", "v1") if metric == "frd" else None
    if version not in (None, "v1"):  # frd_drop_degenerate: not comparable to FRD v1's values
        return f"FRD {version}, not FRD v1"
    verdict = (measurement.ladder or {}).get(metric)
    if isinstance(verdict, dict) and verdict.get("passes") is False:
        return "fails the validity ladder"
    if metric in INCEPTION_METRICS and not measurement.standard_weights:
        return f"{(measurement.weights or {}).get('kind', 'non-standard')} Inception weights"
    return None


# A best run "collapsed" when recall or coverage (k-NN manifolds in the feature network's space) fall
# below COLLAPSE_FLOOR, a quarter of what a sample of the real set itself reaches (coverage 1 - 2^-k, 0.97
# at k = 5, Naeem et al. 2020; recall near 1 likewise), or when random pairs of its images are more alike
# than random real pairs by more than MS_SSIM_CEILING (Odena et al. 2017's mode-collapse check).
COLLAPSE_FLOOR = 0.25
MS_SSIM_CEILING = 1.5
CONCERNS_RULE = (
    f"collapsed: recall or coverage below {COLLAPSE_FLOOR} (a sample of the real set reaches ~1: coverage "
    f"1 - 2^-k, 0.97 at k = 5), or MS-SSIM generated/real above {MS_SSIM_CEILING}; memorised: memorisation "
    "flagged in any space"
)


def concerns(measurement: Measurement) -> list[str]:
    """What a reviewer must know of a run beside its one trusted metric (CONCERNS_RULE), in words:
    ["collapsed: coverage 0.04 < 0.25", "memorised: pixels, inception"]; [] when nothing is wrong or the
    numbers were not measured."""
    low = [
        f"{key} {number:.2f} < {COLLAPSE_FLOOR}"
        for key in ("recall", "coverage")
        if (number := measurement.number(key)) is not None and number < COLLAPSE_FLOOR
    ]
    ratio = measurement.number("ms_ssim_ratio")
    if ratio is not None and ratio > MS_SSIM_CEILING:
        low.append(f"MS-SSIM generated/real {ratio:.2f} > {MS_SSIM_CEILING}")
    found = [f"collapsed: {', '.join(low)}"] if low else []
    spaces = measurement.memorised_spaces()
    if spaces or (spaces is not None and measurement.memorisation.get("memorised") is True):
        found.append(f"memorised: {', '.join(spaces) or 'flagged'}")
    return found


def assess(measurement: Measurement) -> dict[str, dict]:
    """{metric: {"value", "distrust"}} for each metric in ORDER: what the rule needs of one measurement
    (a report row keeps it)."""
    return {m: {"value": value(measurement, m), "distrust": distrust(measurement, m)} for m in ORDER}


@dataclass(frozen=True)
class Choice:
    """The metric best follows (None: none is trusted by every measurement), and why each metric before
    it in ORDER was passed over."""

    metric: str | None
    passed_over: dict[str, str]

    def describe(self) -> str:
        """ "by FID", "by FRD (FID: fails the validity ladder)", "none (FID: ...; FRD: not measured)"."""
        reasons = "; ".join(f"{m.upper()}: {why}" for m, why in self.passed_over.items())
        head = f"by {self.metric.upper()}" if self.metric else "none"
        return f"{head} ({reasons})" if reasons else head


def choose(assessments: list[dict[str, dict]]) -> Choice:
    """The one rule: the first metric in ORDER that every assessed measurement has and trusts."""
    passed_over: dict[str, str] = {}
    for metric in ORDER:
        reasons = [a[metric]["distrust"] for a in assessments if a[metric]["distrust"]]
        if assessments and not reasons:
            return Choice(metric, passed_over)
        passed_over[metric] = reasons[0] if reasons else "nothing measured"
        if len(set(reasons)) > 1:
            passed_over[metric] += " (in some)"
    return Choice(None, passed_over)


def best_of(measurements: list[Measurement]) -> tuple[Measurement | None, Choice]:
    """The best measurement (the earliest of equals) and the choice behind it; None when nothing is best."""
    choice = choose([assess(m) for m in measurements])
    if choice.metric is None:
        return None, choice
    return min(measurements, key=lambda m: value(m, choice.metric)), choice
