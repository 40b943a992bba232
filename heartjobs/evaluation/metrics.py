"""The metric registry: each metric declared once, with the feature space it measures in, whether a
measurement's settings ask for it, how its numbers are computed from the real and generated sides of that
space, and which question each number answers.

Three spaces exist: "inception", the feature network's (pytorch-fid's InceptionV3, heartjobs.evaluation.inception,
or RadImageNet's ResNet-50 with [eval] features = "radimagenet", heartjobs.evaluation.radimagenet: the
space keeps its first name, and every record names the network and its weights' sha256); "radiomics"
(frd-score's v1 features, by pyradiomics or its torch equal, heartjobs.evaluation.radiomics); and
"pixels" (the generated images themselves, uint8, as PNG files of them would be). The driver
(heartjobs.evaluation.driver) computes each space's features once per repeat from one stream of generated
images and hands them to every metric of that space; the validity ladder computes the same functions on
its rungs.

Each number answers one question (QUESTIONS): fidelity (are the images realistic), diversity (do they
cover the real set's variety), both at once (FID, KID, FRD fold the two into one number), or memorisation
(are training slices returned). The ladder scores each number on the rungs of its question. Adding a
metric is one module with its compute function and one entry in METRICS (and, for a new feature space,
its extractor in the driver): docs/development.md, "Adding a metric".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from heartjobs.errors import HeartjobsError
from heartjobs.spec.defaults import EVAL_LATER_SETTINGS
from heartjobs.spec.schema import EvalSection

from .statistics import frechet_distance, kernel_inception_distance, mean_and_covariance

Space = Literal["inception", "radiomics", "pixels"]
SPACES: tuple[Space, ...] = ("inception", "radiomics", "pixels")
Question = Literal["overall", "fidelity", "diversity", "memorisation"]
QUESTIONS: dict[str, str] = {
    "overall": "fidelity and diversity in one number",
    "fidelity": "are the images realistic",
    "diversity": "do they cover the real set's variety",
    "memorisation": "are training slices returned",
}


@dataclass(frozen=True)
class Reference:
    """The real side of a distance in the feature network's space: the features, their mean and covariance."""

    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> Reference:
        return cls(features, *mean_and_covariance(features))


@dataclass(frozen=True)
class Options:
    """What a computation may depend on beyond the two sides: the repeat's seed, KID's subsets, whether FRD
    leaves out its round-off columns, PRDC's k, MS-SSIM's pairs, the memorisation quantile and the device
    (MS-SSIM and the nearest-neighbour search run there)."""

    seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    frd_drop_degenerate: bool = False
    prdc_k: int = 5
    ms_ssim_pairs: int = 1000
    memorisation_quantile: float = 0.01
    device: str = "cpu"
    # memorisation's baseline: the held-out real images' side in the metric's space (the ladder's held-out
    # half); None: leave-one-out within the training set (a run trained on every slice)
    held_out: Any = None

    @classmethod
    def of(cls, settings: EvalSection, seed: int, device: object = "cpu") -> Options:
        return cls(
            seed,
            settings.kid_subsets,
            settings.kid_subset_size,
            settings.frd_drop_degenerate,
            settings.prdc_k,
            settings.ms_ssim_pairs,
            settings.memorisation_quantile,
            str(device),
        )


@dataclass(frozen=True)
class Number:
    """One number a metric gives: its key in a repeat's entry, the question it answers and which way is
    better."""

    key: str
    question: Question
    better: Literal["lower", "higher"]


@dataclass(frozen=True)
class Metric:
    """One metric. compute(real, generated, options) returns the values a repeat's entry shows under this
    metric's keys ({"fid": ...}; KID adds the std over its subsets) and, for a metric with more to say
    than its numbers (FRD's per-feature shifts, PRDC's protocol, memorisation's closest pairs), that
    detail; `numbers` lists the ranked numbers among the values, the first one the metric's headline."""

    name: str
    title: str
    space: Space
    wanted: Callable[[EvalSection], bool]
    compute: Callable[[Any, Any, Options], tuple[dict, Any]]
    numbers: tuple[Number, ...]

    def value(self, entry: dict, key: str | None = None) -> float:
        return entry[key or self.numbers[0].key]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(number.key for number in self.numbers)


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


PRDC_KEYS = ("precision", "recall", "density", "coverage")


def _prdc(real: Reference, generated: np.ndarray, options: Options) -> tuple[dict, dict]:
    from .manifold import prdc

    result = prdc(real.features, generated, options.prdc_k, space="inception")
    return {key: result[key] for key in PRDC_KEYS}, {k: v for k, v in result.items() if k not in PRDC_KEYS}


def _prdc_radiomics(real, generated, options: Options) -> tuple[dict, dict]:
    from .manifold import prdc_radiomics

    result = prdc_radiomics(real, generated, options.prdc_k)
    values = {f"{key}_radiomics": result[key] for key in PRDC_KEYS}
    return values, {k: v for k, v in result.items() if k not in PRDC_KEYS}


def _ms_ssim(real: np.ndarray, generated: np.ndarray, options: Options) -> tuple[dict, dict]:
    from .diversity import ms_ssim_diversity

    result = ms_ssim_diversity(generated, real, pairs=options.ms_ssim_pairs, seed=options.seed, device=options.device)
    values = {key: result[key] for key in ("ms_ssim_ratio", "ms_ssim_generated", "ms_ssim_real")}
    return values, result["protocol"]


def _memorisation(space: str) -> Callable[[Any, Any, Options], tuple[dict, dict]]:
    """Memorisation in one space: the real side is the training set (a run trained on every real image it
    is measured against). The baseline is options.held_out, the held-out real images in this space, where
    there are some (the ladder's held-out half); else leave-one-out (heartjobs.evaluation.memorisation)."""

    def compute(real, generated, options: Options) -> tuple[dict, dict]:
        from .memorisation import memorisation

        held_out = options.held_out
        if space == "inception":
            training, generated_rows = real.features, generated
        elif space == "radiomics":
            from .manifold import radiomic_space

            training, generated_rows, _ = radiomic_space(real, generated)
            if held_out is not None:  # z-scored on the training set as the generated images are
                _, held_out, _ = radiomic_space(real, held_out)
        else:
            training, generated_rows = real, generated
        result = memorisation(
            generated_rows,
            training,
            held_out,
            space=space,
            quantile=options.memorisation_quantile,
            device=options.device,
        )
        key = f"memorised_{space}"
        return {key: result["fraction_below"], f"{key}_flag": result["memorised"]}, result

    return compute


def _prdc_numbers(suffix: str) -> tuple[Number, ...]:
    """PRDC's four numbers in one space: precision and density ask fidelity, recall and coverage diversity."""
    questions = {"precision": "fidelity", "density": "fidelity", "recall": "diversity", "coverage": "diversity"}
    return tuple(Number(key + suffix, question, "higher") for key, question in questions.items())


def _on(flag: str) -> Callable[[EvalSection], bool]:
    return lambda settings: bool(getattr(settings, flag))


def _radiomic_and(flag: str) -> Callable[[EvalSection], bool]:
    return lambda settings: bool(settings.frd and getattr(settings, flag))


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "fid",
            "Fréchet Inception Distance (Heusel et al. 2017)",
            "inception",
            lambda s: True,
            _fid,
            (Number("fid", "overall", "lower"),),
        ),
        Metric(
            "kid",
            "Kernel Inception Distance (Binkowski et al. 2018)",
            "inception",
            _on("kid"),
            _kid,
            (Number("kid", "overall", "lower"),),
        ),
        Metric(
            "frd",
            "Fréchet Radiomics Distance v1 (Osuala et al. 2024)",
            "radiomics",
            _on("frd"),
            _frd,
            (Number("frd", "overall", "lower"),),
        ),
        Metric(
            "prdc",
            "precision, recall (Kynkäänniemi et al. 2019), density, coverage (Naeem et al. 2020), k-NN manifolds",
            "inception",
            _on("prdc"),
            _prdc,
            _prdc_numbers(""),
        ),
        Metric(
            "prdc_radiomics",
            "precision, recall, density, coverage in the radiomic space (z-scored as FRD v1)",
            "radiomics",
            _radiomic_and("prdc"),
            _prdc_radiomics,
            _prdc_numbers("_radiomics"),
        ),
        Metric(
            "ms_ssim",
            "MS-SSIM between random pairs, generated / real (Odena et al. 2017)",
            "pixels",
            _on("ms_ssim"),
            _ms_ssim,
            (Number("ms_ssim_ratio", "diversity", "lower"),),
        ),
        Metric(
            "memorisation_pixels",
            "memorisation: generated images nearer a training slice than the nearest 1 % of real ones, pixels",
            "pixels",
            _on("memorisation"),
            _memorisation("pixels"),
            (Number("memorised_pixels", "memorisation", "lower"),),
        ),
        Metric(
            "memorisation_inception",
            "memorisation in the feature network's space",
            "inception",
            _on("memorisation"),
            _memorisation("inception"),
            (Number("memorised_inception", "memorisation", "lower"),),
        ),
        Metric(
            "memorisation_radiomics",
            "memorisation in the radiomic space (z-scored as FRD v1)",
            "radiomics",
            _radiomic_and("memorisation"),
            _memorisation("radiomics"),
            (Number("memorised_radiomics", "memorisation", "lower"),),
        ),
    )
}


def numbers() -> dict[str, tuple[Metric, Number]]:
    """Every ranked number of the registry by its key, with its metric."""
    return {number.key: (metric, number) for metric in METRICS.values() for number in metric.numbers}


def check_prdc_k(settings: EvalSection, n_real: int) -> None:
    """A PRDC k the settings chose that some set it compares cannot hold (k nearest neighbours need more
    than k images) is refused, before any image is generated and, by the preflight, before training. The
    default k on a set too small for it is no mistake of the spec: PRDC is then recorded as unmeasurable,
    with why, as FRD on too few images is."""
    if not settings.prdc or settings.prdc_k == EVAL_LATER_SETTINGS["prdc_k"]:
        return
    counts = {"n_generated": settings.n_generated, "n_real": n_real}
    if settings.frd:
        counts["frd_n"] = min(settings.frd_n, settings.n_generated)  # the radiomic space's generated set
    label, fewest = min(counts.items(), key=lambda item: item[1])
    if settings.prdc_k >= fewest:
        raise HeartjobsError(
            f"eval.prdc_k: k = {settings.prdc_k} nearest neighbours need more than k images in each set, but "
            f"{label} = {fewest}; lower prdc_k or set prdc = false"
        )


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
