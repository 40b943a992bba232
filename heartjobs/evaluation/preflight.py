"""Can a spec's evaluation run on this machine? Checked before any training, so that a job never trains
for hours and then finds out it cannot be measured: the Inception weights FID needs are here (or can be
downloaded now), frd-score with pyradiomics imports, and every other set it is measured against ([eval]
against) is a prepared set of its image size.
"""

from __future__ import annotations

import functools
import os
import urllib.request
from pathlib import Path

from heartjobs.errors import HeartjobsError
from heartjobs.spec.schema import ResolvedSpec
from heartjobs.store.prepared import PreparedSet

from . import radiomics
from .cache import cache_dir, check_torch_hub_place
from .metrics import check_prdc_k

REACH_TIMEOUT_S = 5.0
LATER = (
    'or set `[eval] weights = "untrained"` (FRD stays meaningful; FID is then labelled), or `[eval] measure = false` '
    "and measure later with `heartjobs fid RUN`"
)


@functools.cache
def _downloadable(url: str) -> str | None:
    """None when the URL answers now; otherwise why not. Asked once per process (validate of 21 specs
    behind a firewall that drops packets waits once, not 21 times)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=REACH_TIMEOUT_S).close()
    except Exception as exc:  # no network, DNS, proxy, HTTP error: all mean "not now"
        return str(getattr(exc, "reason", exc))
    return None


def check_measurable(spec: ResolvedSpec, path: Path | str) -> None:
    """Raise a one-line HeartjobsError naming the spec file and field when the evaluation at the end of
    training, or during it ([eval] every, with [eval.during]'s metrics), could not run here. Nothing is checked
    when the spec measures nothing."""
    settings = spec.eval
    if settings.every is not None:  # measured during training even where nothing is measured at the end
        during = settings.during_settings()
        settings = settings.model_copy(update={"measure": True, "frd": settings.frd and settings.measure or during.frd})
    if not settings.measure:
        return
    cache_dir()  # an environment that gives the cache no place (an empty HOME) fails now, not after training
    if settings.features == "radimagenet":
        _check_radimagenet(settings.weights, path)
    else:
        _check_inception(settings.weights, path)
    if settings.frd:
        try:
            radiomics.check_available(settings.frd_backend)
        except HeartjobsError as exc:
            raise HeartjobsError(f"{path}: eval.frd: {exc}") from None
    try:  # PRDC's k against the set sizes: known from the spec and the prepared set's count
        check_prdc_k(settings, min(settings.n_real or spec.data.count, spec.data.count))
    except HeartjobsError as exc:
        raise HeartjobsError(f"{path}: {exc}") from None
    for other in spec.eval.against:
        open_against(other, spec, f"{path}: eval.against: ")


def _check_radimagenet(weights: str, path: Path | str) -> None:
    from .radimagenet import resolve_weights  # torch: only when there is a check

    try:
        resolve_weights(weights)
    except HeartjobsError as exc:
        raise HeartjobsError(f"{path}: eval.weights: {exc}") from None


def _check_inception(weights: str, path: Path | str) -> None:
    from .weights import ENV_WEIGHTS, how_to_get, hub_path, resolve_weights  # torch: only when there is a check

    if weights == "standard" and not os.environ.get(ENV_WEIGHTS):
        check_torch_hub_place()  # likewise torch.hub's folder, where the standard weights are looked for
    try:
        resolve_weights(weights, download=False)
    except HeartjobsError as exc:
        # a named file, or a standard file that is here but wrong: nothing a download would fix
        if weights != "standard" or os.environ.get(ENV_WEIGHTS) or hub_path().is_file():
            raise HeartjobsError(f"{path}: eval.weights: {exc}; {LATER}") from None
        from pytorch_fid.inception import FID_WEIGHTS_URL

        why = _downloadable(FID_WEIGHTS_URL)
        if why is not None:
            raise HeartjobsError(
                f"{path}: eval.weights: the standard Inception file is not here and cannot be downloaded now "
                f"({why}); {how_to_get()}; {LATER}"
            ) from None


def open_against(path: Path, spec: ResolvedSpec, where: str) -> PreparedSet:
    """Another prepared set a run is measured against (a held-out heart): one whose images the run's
    generator can be compared with (its image size and channels) and that is not the run's own training
    set; otherwise one line starting with `where` ("--against ", "job.toml: eval.against: ")."""
    try:
        other = PreparedSet.open(path)
    except HeartjobsError as exc:
        raise HeartjobsError(f"{where}{exc}") from None
    differs = []
    if other.size != spec.data.size:
        differs.append(f"{other.size} px images, but the run's generator makes {spec.data.size} px ones")
    if other.channels != spec.data.channels:
        differs.append(f"{other.channels} channels, but the run's images have {spec.data.channels}")
    if differs:
        hint = f" (prepare it with --size {spec.data.size})" if other.size != spec.data.size else ""
        raise HeartjobsError(f"{where}{path}: {'; '.join(differs)}{hint}")
    if other.content_hash == spec.data.content_hash:
        raise HeartjobsError(
            f"{where}{path}: the run's own training set (content_hash {other.content_hash[:12]}), which its own "
            "measurement measures already"
        )
    return other
