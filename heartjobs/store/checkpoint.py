"""Checkpoints and generator files: everything needed to continue a run, or to rebuild its generator.

A checkpoint is named by how far training got: epoch_0004.pt after four whole epochs, and
epoch_0004_batch_0012.pt when a run was stopped twelve batches into the fifth. It carries the spec
hash, and a run refuses to continue from a checkpoint made under another configuration. generator.pt
holds the final generator alone with what it takes to rebuild it. Files are written atomically; the
newest few checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.store.rundir import RunDir

CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"epoch_(\d{4,})(?:_batch_(\d{4,}))?\.pt")


def checkpoint_name(epoch: int, batch: int | None = None) -> str:
    return f"epoch_{epoch:04d}.pt" if not batch else f"epoch_{epoch:04d}_batch_{batch:04d}.pt"


def checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint file's name says it holds (epoch_0010.pt, epoch_0010_batch_0003.pt -> 10)."""
    match = _NAME.fullmatch(Path(path).name)
    if not match:
        raise ValueError(f"{path}: not a checkpoint file name")
    return int(match.group(1))


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in training order (oldest first)."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if m := _NAME.fullmatch(path.name):
            found.append(((int(m.group(1)), int(m.group(2) or 0)), path))
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: Path, trainer_state: dict, spec_hash: str, keep: int) -> Path:
    """Write a checkpoint atomically, then delete all but the newest `keep`."""
    position = trainer_state["position"]
    path = folder / checkpoint_name(trainer_state["epoch"], position["batch"] if position else None)
    payload = {"format": CHECKPOINT_FORMAT, "spec_hash": spec_hash, **trainer_state}
    previous = list_checkpoints(folder)
    if previous:  # the next one is about as large as the last: say so before the disk fills mid-write
        needed = previous[-1].stat().st_size
        if atomic.free_bytes(folder) < needed * 1.1:
            raise atomic.OutOfSpace(path, needed)
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:  # our handle: closed even when torch fails
        torch.save(payload, f)
    for old in list_checkpoints(folder)[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    return path


def _load(path: Path, what: str) -> dict:
    """torch.load on the CPU, tensors and plain types only; a file it can't read is a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HeartjobsError(f"{path}: unreadable {what} ({one_line(exc, 200)})") from None


def load_checkpoint(path: Path, spec_hash: str) -> dict:
    """Load a checkpoint (on the CPU: RNG states must stay there; the trainer moves the rest to its
    device), refusing one made under another configuration."""
    state = _load(path, "checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise HeartjobsError(f"{path}: format: expected {CHECKPOINT_FORMAT}, got {state.get('format')}")
    if state.get("spec_hash") != spec_hash:
        raise HeartjobsError(
            f"{path}: spec_hash: the checkpoint was made with spec {state.get('spec_hash')}, "
            f"the spec now resolves to {spec_hash}; refusing to resume under a different configuration"
        )
    return state


def _architecture(spec: dict) -> dict:
    """What rebuilds a generator, from a resolved spec (as a dict). hidden and width (the [architecture]
    knobs) are None in a spec recorded before they existed: the thesis' widths."""
    knobs = spec.get("architecture") or {}
    return {
        "model": spec["model"],
        "size": spec["data"]["size"],
        "channels": spec["data"]["channels"],
        "latent_dim": spec["train"]["latent_dim"],
        "batchnorm_eps": spec["train"]["batchnorm_eps"],
        "hidden": knobs.get("hidden"),
        "width": knobs.get("width"),
    }


def build_generator(architecture: dict, state_dict: dict, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The one generator rebuild: the model named in `architecture` with `state_dict`, in eval mode."""
    from heartjobs.models import Networks, build_networks

    hidden = architecture.get("hidden")  # hidden and width: absent from a generator file written before
    generator, _ = build_networks(  # [architecture] existed (the thesis' widths)
        Networks(
            model=architecture["model"],
            size=architecture["size"],
            channels=architecture["channels"],
            latent_dim=architecture["latent_dim"],
            batchnorm_eps=architecture["batchnorm_eps"],
            hidden=None if hidden is None else tuple(hidden),
            width=architecture.get("width"),
        )
    )
    generator.load_state_dict(state_dict)
    return generator.to(device).eval()


def save_generator(path: Path, generator: torch.nn.Module, spec: dict, epoch: int, spec_hash: str) -> None:
    """The final generator alone, on CPU tensors, with what it takes to rebuild it."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        **_architecture(spec),
        "epoch": epoch,
        "spec_hash": spec_hash,
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
    }
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved generator (in eval mode) on `device`; returns (generator, its metadata)."""
    payload = _load(path, "generator file")
    if "state_dict" not in payload:
        raise HeartjobsError(f"{path}: not a heartjobs generator.pt (no state_dict)")
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    try:
        return build_generator(meta, payload["state_dict"], device), meta
    except (KeyError, RuntimeError) as exc:  # missing architecture keys, weights of another shape
        raise HeartjobsError(f"{path}: not a generator this architecture can load ({one_line(exc, 160)})") from None


@dataclass
class Snapshot:
    """A generator to measure, the file it came from (relative to its run folder) and its epoch."""

    generator: torch.nn.Module
    file: str
    epoch: int


def load_snapshot(run: RunDir, spec, checkpoint: Path | None, device: torch.device) -> Snapshot:
    """The run's final generator (checkpoint None) or the generator inside one of its checkpoints."""
    if checkpoint is None:
        if not run.generator.is_file():
            raise HeartjobsError(f"{run.generator}: missing; the run has not finished (give --checkpoint FILE)")
        generator, meta = load_generator(run.generator, device)
        if meta.get("spec_hash") != spec.spec_hash:  # a generator copied in from another run
            raise HeartjobsError(
                f"{run.generator}: spec_hash: made by spec {meta.get('spec_hash')}, this run is spec "
                f"{spec.spec_hash}; not measuring another run's generator under this run's name"
            )
        return Snapshot(generator, RunDir.GENERATOR, int(meta["epoch"]))
    state = load_checkpoint(Path(checkpoint), spec.spec_hash)
    if "G" not in state:
        raise HeartjobsError(f"{checkpoint}: not a training checkpoint (use it without --checkpoint)")
    generator = build_generator(_architecture(spec.model_dump(mode="json")), state["G"], device)
    try:
        name = str(Path(checkpoint).resolve().relative_to(run.path.resolve()))
    except ValueError:
        name = str(checkpoint)
    return Snapshot(generator, name, int(state["epoch"]))
