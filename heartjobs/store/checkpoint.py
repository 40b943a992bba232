"""Checkpoints and generator files: everything needed to continue a run, or to rebuild its generator.

A checkpoint is named by how far training got: epoch_0004.pt after four whole epochs, and
epoch_0004_batch_0012.pt when a run was stopped twelve batches into the fifth. It carries the spec
hash, and a run refuses to continue from a checkpoint made under another configuration. generator.pt
holds the final generator alone with what it takes to rebuild it. Files are written atomically (during
training from a host copy, in the background: save_checkpoint_in_background); the newest few checkpoints
are kept.

Reading trusts no file: torch.load runs with weights_only (no pickled code), and what it returns is
checked field by field (required keys, their types, a known model) before anything is built from it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.models import FAMILIES, MODELS
from heartjobs.models.family import STYLEGAN2_PAPER256
from heartjobs.store.background import BackgroundWriter, host_copy
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


def checkpoint_path(folder: Path, trainer_state: dict) -> Path:
    """The file a trainer state is saved as (its epoch, and its batch when stopped inside an epoch)."""
    position = trainer_state["position"]
    return folder / checkpoint_name(trainer_state["epoch"], position["batch"] if position else None)


def save_checkpoint(folder: Path, trainer_state: dict, spec_hash: str, keep: int) -> Path:
    """Write a checkpoint atomically, then delete all but the newest `keep`."""
    path = checkpoint_path(folder, trainer_state)
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


def save_checkpoint_in_background(
    writer: BackgroundWriter, folder: Path, trainer_state: dict, spec_hash: str, keep: int, device: torch.device
) -> Path:
    """save_checkpoint off the critical path: the state is copied to the host now (training may change the
    originals as soon as this returns), then written by `writer` once its previous write is done (whose
    error, if any, is raised here). The same bytes as save_checkpoint; returns the path it will have."""
    copied = host_copy(trainer_state, device)
    writer.submit(lambda: save_checkpoint(folder, copied, spec_hash, keep))
    return checkpoint_path(folder, copied)


# torch's advice when weights_only refuses a file: load it with weights_only=False, or allowlist the
# refused class ("if you trust the source"). Both run what a hostile file holds, so it is left out.
_UNSAFE_ADVICE = re.compile(r"weights_only|trust|safe_globals|check the documentation|please file an issue", re.I)


def torch_load_reason(exc: BaseException) -> str:
    """Why torch.load refused a file, on one line, without torch's advice to take the unsafe route."""
    if isinstance(exc, OSError) and exc.filename is not None:  # opening it failed: the system's reason
        return one_line(exc.strerror or exc)
    text = str(exc)
    if not text.startswith("Weights only load failed"):  # garbage, a truncated archive: torch's bare words
        text = f"not a file torch.save wrote: {type(exc).__name__}: {text}"
    head, marker, detail = text.partition("WeightsUnpickler error:")
    kept = [s for s in re.split(r"(?<=\.)\s+", head) if s.strip() and not _UNSAFE_ADVICE.search(s)]
    if marker:  # what the unpickler refused, up to its own advice
        kept.append(f"{marker} {re.split(r'Please use|Check the documentation', detail)[0].strip()}")
    return one_line(" ".join(kept) or type(exc).__name__, 200)


def load_tensors(path: Path, what: str) -> object:
    """torch.load on the CPU, tensors and plain types only (weights_only: a pickle's code never runs); a file
    it can't read is a one-line error naming it. What comes back is unchecked: any list, dict or tensor."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HeartjobsError(f"{path}: unreadable {what} ({torch_load_reason(exc)})") from None


# --- what a file must hold: (key, test, what the test expects), checked in order ---


def _whole(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _tensors(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


Field = tuple[str, Callable[[object], bool], str]
_GENERATOR_FIELDS: list[Field] = [
    ("model", lambda v: isinstance(v, str) and v in FAMILIES, f"one of {', '.join(MODELS)}"),
    ("size", lambda v: _whole(v, 1), "a positive whole number"),
    ("channels", lambda v: _whole(v, 1), "a positive whole number"),
    ("latent_dim", lambda v: _whole(v, 1), "a positive whole number"),
    ("batchnorm_eps", lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    ("hidden", lambda v: v is None or (isinstance(v, list | tuple) and all(_whole(n, 1) for n in v)), "layer widths"),
    ("width", lambda v: v is None or _whole(v, 1), "a positive whole number"),
    ("epoch", lambda v: _whole(v, 0), "a whole number of epochs"),
    ("spec_hash", lambda v: isinstance(v, str), "a string"),
    ("state_dict", _tensors, "the generator's tensors by name"),
]
_OPTIONAL = {"hidden", "width"}  # absent from a generator file written before [architecture] existed
_CHECKPOINT_FIELDS: list[Field] = [
    ("epoch", lambda v: _whole(v, 0), "a whole number of epochs"),
    ("G", _tensors, "the generator's tensors by name"),
    ("D", _tensors, "the discriminator's tensors by name"),
    ("opt_G", lambda v: isinstance(v, dict), "an optimizer state"),
    ("opt_D", lambda v: isinstance(v, dict), "an optimizer state"),
    ("fixed_noise", lambda v: isinstance(v, torch.Tensor), "a tensor"),
    ("history", lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v), "a list of epoch records"),
    ("position", lambda v: v is None or isinstance(v, dict), "where in an epoch training stopped"),
    ("rng", lambda v: isinstance(v, dict), "the random generators' states"),
]
_POSITION_FIELDS: list[Field] = [
    ("perm", lambda v: isinstance(v, torch.Tensor), "a tensor"),
    ("batch", lambda v: _whole(v, 0), "a whole number"),
    ("d_sum", lambda v: isinstance(v, torch.Tensor), "a tensor"),
    ("g_sum", lambda v: isinstance(v, torch.Tensor), "a tensor"),
    ("g_count", lambda v: _whole(v, 0), "a whole number"),
    ("seconds", lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
]


def _shown(value: object) -> str:
    """A value for an error line: short scalars as they are, anything else by its type."""
    if isinstance(value, str | int | float | bool) or value is None:
        return one_line(repr(value), 60)
    return f"a {type(value).__name__}"


def _check_fields(path: Path, record: object, fields: list[Field], what: str, prefix: str = "") -> dict:
    """`record` as the dict `fields` describe, or a one-line error naming the file and the first field
    that is missing or not what it should be."""
    if not isinstance(record, dict):
        raise HeartjobsError(f"{path}: not a heartjobs {what} (it holds {_shown(record)}, not a dict)")
    for key, test, expected in fields:
        if key not in record:
            if key in _OPTIONAL:
                continue
            raise HeartjobsError(f"{path}: {prefix}{key}: missing; not a heartjobs {what}")
        if not test(record[key]):
            raise HeartjobsError(f"{path}: {prefix}{key}: expected {expected}, got {_shown(record[key])}")
    return record


def load_checkpoint(path: Path, spec_hash: str) -> dict:
    """Load a checkpoint (on the CPU: RNG states must stay there; the trainer moves the rest to its
    device), refusing one made under another configuration or one that is not a heartjobs checkpoint."""
    return _checked_checkpoint(path, load_tensors(path, "checkpoint"), spec_hash)


def _checked_checkpoint(path: Path, state: object, spec_hash: str) -> dict:
    if not isinstance(state, dict):
        raise HeartjobsError(f"{path}: not a heartjobs checkpoint (it holds {_shown(state)}, not a dict)")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise HeartjobsError(f"{path}: format: expected {CHECKPOINT_FORMAT}, got {_shown(state.get('format'))}")
    if (recorded := state.get("spec_hash")) != spec_hash:
        shown = recorded[:64] if isinstance(recorded, str) else _shown(recorded)
        raise HeartjobsError(
            f"{path}: spec_hash: the checkpoint was made with spec {shown}, "
            f"the spec now resolves to {spec_hash}; refusing to resume under a different configuration"
        )
    _check_fields(path, state, _CHECKPOINT_FIELDS, "checkpoint")
    if state["position"] is not None:
        _check_fields(path, state["position"], _POSITION_FIELDS, "checkpoint", "position.")
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
        **{key: knobs.get(key) for key in STYLEGAN2_PAPER256},
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
            **{key: architecture.get(key) for key in STYLEGAN2_PAPER256},
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


def read_generator(path: Path) -> dict:
    """A generator file's contents, checked: the architecture it names, its epoch, spec hash and tensors."""
    return _check_fields(path, load_tensors(path, "generator file"), _GENERATOR_FIELDS, "generator file")


def _rebuilt(path: Path, architecture: dict, state_dict: dict, device: str | torch.device) -> torch.nn.Module:
    """build_generator, with weights that do not fit the architecture as a one-line error naming the file."""
    try:
        return build_generator(architecture, state_dict, device)
    except (KeyError, RuntimeError, ValueError) as exc:  # missing architecture keys, weights of another shape
        raise HeartjobsError(f"{path}: not a generator this architecture can load ({one_line(exc, 160)})") from None


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved generator (in eval mode) on `device`; returns (generator, its metadata)."""
    payload = read_generator(path)
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return _rebuilt(path, meta, payload["state_dict"], device), meta


@dataclass
class Snapshot:
    """A generator to measure, the file it came from (relative to its run folder) and its epoch."""

    generator: torch.nn.Module
    file: str
    epoch: int


def load_snapshot(run: RunDir, spec, checkpoint: Path | None, device: torch.device) -> Snapshot:
    """The run's final generator (checkpoint None) or the generator inside one of its checkpoints. A file
    that is not this run's is refused before a network is built from it."""
    architecture = _architecture(spec.model_dump(mode="json"))
    if checkpoint is None:
        if not run.generator.is_file():
            raise HeartjobsError(f"{run.generator}: missing; the run has not finished (give --checkpoint FILE)")
        payload = read_generator(run.generator)
        if payload["spec_hash"] != spec.spec_hash:  # a generator copied in from another run
            raise HeartjobsError(
                f"{run.generator}: spec_hash: made by spec {payload['spec_hash'][:64]}, this run is spec "
                f"{spec.spec_hash}; not measuring another run's generator under this run's name"
            )
        for key in ("model", "size", "channels", "latent_dim"):  # what the spec hash stands for, edited
            if payload[key] != architecture[key]:
                raise HeartjobsError(
                    f"{run.generator}: {key}: {_shown(payload[key])} here, {architecture[key]!r} in the run's "
                    "spec; not this run's generator"
                )
        meta = {k: v for k, v in payload.items() if k != "state_dict"}
        generator = _rebuilt(run.generator, meta, payload["state_dict"], device)
        return Snapshot(generator, RunDir.GENERATOR, payload["epoch"])
    state = load_tensors(Path(checkpoint), "checkpoint")
    if isinstance(state, dict) and "G" not in state and "state_dict" in state:  # a generator file
        raise HeartjobsError(f"{checkpoint}: not a training checkpoint (use it without --checkpoint)")
    state = _checked_checkpoint(Path(checkpoint), state, spec.spec_hash)
    generator = _rebuilt(Path(checkpoint), architecture, state["G"], device)
    try:
        name = str(Path(checkpoint).resolve().relative_to(run.path.resolve()))
    except ValueError:
        name = str(checkpoint)
    return Snapshot(generator, name, state["epoch"])
