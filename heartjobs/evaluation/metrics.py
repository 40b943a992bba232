"""The metric registry: each metric declared once, with the feature space it measures in, whether a
measurement's settings ask for it, and how its value is computed from real and generated features.

Two feature spaces exist: "inception" (pytorch-fid's InceptionV3, heartjobs.evaluation.inception) and
"radiomics" (frd-score's v1 features, by pyradiomics or its torch equal, heartjobs.evaluation.radiomics). The driver
(heartjobs.evaluation.driver) extracts each space's features once per repeat from one stream of generated
images and hands them to every metric of that space; the validity ladder computes the same functions on
its rungs. Adding a metric is one module with its compute function and one entry in METRICS (and, for a
new feature space, its extractor in the driver): docs/development.md, "Adding a metric".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from heartjobs.spec.schema import EvalSection

from .statistics import frechet_distance, kernel_inception_distance, mean_and_covariance

Space = Literal["inception", "radiomics"]


@dataclass(frozen=True)
class Reference:
    """The real side of a distance in the Inception space: the features, their mean and covariance."""

    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> Reference:
        return cls(features, *mean_and_covariance(features))


@dataclass(frozen=True)
class Options:
    """What a computation may depend on beyond the two feature sets: the repeat's seed, KID's subsets and
    whether FRD leaves out its round-off columns."""

    seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    frd_drop_degenerate: bool = False

    @classmethod
    def of(cls, settings: EvalSection, seed: int) -> Options:
        return cls(seed, settings.kid_subsets, settings.kid_subset_size, settings.frd_drop_degenerate)


@dataclass(frozen=True)
class Metric:
    """One metric. compute(real, generated, options) returns the values a repeat's record shows under this
    metric's keys ({"fid": ...}; KID adds the std over its subsets) and, for a metric with more to say
    than its value (FRD's per-feature shifts), that detail; `value` reads the one number back from them."""

    name: str
    title: str
    space: Space
    wanted: Callable[[EvalSection], bool]
    compute: Callable[[Any, Any, Options], tuple[dict, Any]]

    def value(self, entry: dict) -> float:
        return entry[self.name]


def _fid(real: Reference, generated: np.ndarray, options: Options) -> tuple[dict, None]:
    mu, sigma = mean_and_covariance(generated)
    return {"fid": frechet_distance(mu, sigma, real.mu, real.sigma)}, None


def _kid(real: Reference, generated: np.ndarray, options: Options) -> tuple[dict, None]:
    mean, subset_std = kernel_inception_distance(
        real.features, generated, subsets=options.kid_subsets, subset_size=options.kid_subset_size, seed=options.seed
    )
    return {"kid": mean, "kid_subset_std": subset_std}, None


def _frd(real, generated, options: Options) -> tuple[dict, Any]:
    from . import radiomics

    result = radiomics.frechet_radiomics_distance(real, generated, options.frd_drop_degenerate)
    return {"frd": result.frd}, result


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("fid", "Fréchet Inception Distance (Heusel et al. 2017)", "inception", lambda s: True, _fid),
        Metric("kid", "Kernel Inception Distance (Binkowski et al. 2018)", "inception", lambda s: s.kid, _kid),
        Metric("frd", "Fréchet Radiomics Distance v1 (Osuala et al. 2024)", "radiomics", lambda s: s.frd, _frd),
    )
}


def wanted(settings: EvalSection) -> list[Metric]:
    """The metrics a measurement under `settings` takes, in the registry's order."""
    return [metric for metric in METRICS.values() if metric.wanted(settings)]


def in_space(metrics: list[Metric] | tuple[Metric, ...], space: Space) -> list[Metric]:
    return [metric for metric in metrics if metric.space == space]


SPACE_FEATURES = {"inception": "dims", "radiomics": "radiomic features"}


def singular_warnings(space: Space, counts: dict[str, int], features: int, approximate: bool = False) -> list[str]:
    """A warning for each set of no more images than the space has features (approximate: frd-score's
    typical count, the exact one known only once measured): the covariance of n images has rank n - 1 at
    most, so it is singular, and a Fréchet distance on it is biased."""
    name = "FID" if space == "inception" else "FRD"
    count = f"~{features}" if approximate else str(features)
    return [
        f"{label} = {n} <= {count} {SPACE_FEATURES[space]}: {name}'s covariance is singular and {name} is biased"
        for label, n in counts.items()
        if n <= features
    ]
