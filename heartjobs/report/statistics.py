"""Statistics over repeated trainings: a metric's mean, spread and 95 % t interval over runs that differ
only in their seed, and the difference between two configurations with Welch's t-test.

Every run contributes one value (its metric averaged over its own FID repeats). The spread here is between
trainings, which is what decides whether a hyperparameter's effect is larger than seed noise; the spread
between FID repeats of one training (a run's own std, the thesis' Table 1 std) is much smaller and says
nothing about that.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
TEST = "Welch's t-test, two-sided (unequal variances, Welch-Satterthwaite degrees of freedom)"


def _t_quantile(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def summarize(values: list[float]) -> dict | None:
    """{"n", "mean", "std" (sample std, ddof 1), "ci95": [low, high]} over runs; std and ci95 are None for
    a single run; None for no run."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(x):
        return None
    mean = float(x.mean())
    if len(x) < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = float(x.std(ddof=1))
    half = _t_quantile(len(x) - 1) * std / math.sqrt(len(x))
    return {"n": int(len(x)), "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def welch(variant: list[float], reference: list[float]) -> dict | None:
    """variant - reference: {"difference", "ci95", "p", "df"} by Welch's t-test; None unless each side has
    two runs or more. Where neither side varies at all (identical runs), ci95 is the single point and p is
    None: no test is possible."""
    a = np.asarray([v for v in variant if v is not None], dtype=np.float64)
    b = np.asarray([v for v in reference if v is not None], dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    difference = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"difference": difference, "ci95": [difference, difference], "p": None, "df": None}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    from scipy import stats

    p = float(2 * stats.t.sf(abs(difference) / se, df))
    half = _t_quantile(df) * se
    return {"difference": difference, "ci95": [difference - half, difference + half], "p": p, "df": float(df)}
