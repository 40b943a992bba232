"""Which torch device a job or a measurement runs on: "auto" (a CUDA GPU when there is one), "cpu" or
"cuda"; asking for CUDA where there is none is a one-line error, before any work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from heartjobs.errors import HeartjobsError

if TYPE_CHECKING:
    import torch


def resolve_device(requested: str, where: str = "train.device") -> torch.device:
    """The device `requested` (one of heartjobs.choices.DEVICES) names on this machine; `where` names the
    setting in the error."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise HeartjobsError(f"{where}: cuda requested, but CUDA is not available on this machine")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
