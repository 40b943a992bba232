"""Where evaluation keeps what it computes once: untrained Inception weights, real-set FID statistics and
radiomic features, the ladder's verdicts; and the environment that places it and torch.hub's folder. No
torch here, so the light callers (verdicts, FRD's workers, the preflight check) stay light."""

from __future__ import annotations

import os
from pathlib import Path

from heartjobs.errors import HeartjobsError


def load_arrays(path: Path, names: tuple[str, ...]) -> dict | None:
    """The named arrays of a cached .npz (never unpickled), or None when there is none or it cannot be
    read whole (cut short, damaged, written by something else): a cache miss, computed again and replaced."""
    import zipfile

    import numpy as np

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cached:
            return {name: cached[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def cache_dir() -> Path:
    """heartjobs' own cache ($HEARTJOBS_CACHE, default ~/.cache/heartjobs); an empty HOME is refused
    rather than taken for one (see refuse_empty)."""
    own = os.environ.get("HEARTJOBS_CACHE")
    if own:
        return Path(own)
    refuse_empty("HOME", "heartjobs' cache", "HEARTJOBS_CACHE")
    return Path.home() / ".cache" / "heartjobs"


def check_torch_hub_place() -> None:
    """Refuse the environments in which torch.hub (where the standard Inception weights are looked for and
    downloaded to) would derive its folder from an empty variable, as it reads them: TORCH_HOME, else
    $XDG_CACHE_HOME/torch, else ~/.cache/torch. An empty one is taken as "" (./hub, ./torch: under the
    current folder) or, for HOME, as / (/.cache/torch)."""
    where = "torch.hub's folder (the Inception weights)"
    if "TORCH_HOME" in os.environ:
        refuse_empty("TORCH_HOME", where, "TORCH_HOME")
    elif "XDG_CACHE_HOME" in os.environ:
        refuse_empty("XDG_CACHE_HOME", where, "TORCH_HOME")
    else:
        refuse_empty("HOME", where, "TORCH_HOME")


def refuse_empty(variable: str, what: str, instead: str) -> None:
    """A variable that is set but empty names no folder: without this, ~ would be / (root's files at
    /.cache) and an empty XDG_CACHE_HOME the current folder. Unset is fine (Python then asks the user
    database for the home folder)."""
    if os.environ.get(variable) == "":
        also = f" or {instead}" if instead != variable else ""
        raise HeartjobsError(f"{variable} is set but empty, so {what} has no place; set {variable}{also} to a folder")
