"""Which Inception weights FID uses: the standard pytorch-fid file (found offline first), an explicit
file, or a seeded untrained network for tests and offline demos.

The standard file is looked for at $HEARTJOBS_FID_WEIGHTS, then where pytorch-fid's own loader keeps it
(torch.hub's checkpoint folder), and only then downloaded through pytorch-fid's loader.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.hashing import sha256_file
from heartjobs.store.checkpoint import load_tensors

from .cache import cache_dir, check_torch_hub_place

STANDARD_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
# The whole sha256 of the standard file (95,628,359 bytes). pytorch-fid publishes only its first 8 hex
# digits (the file name, torch.hub's convention); the whole hash is the one independent public records of
# the file agree on, and it starts with those 8 digits. Not computed on this project's machines, which
# cannot reach the release.
STANDARD_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
ENV_WEIGHTS = "HEARTJOBS_FID_WEIGHTS"
IMAGE_MARKER = "HEARTJOBS_IMAGE"  # set in the Docker image: its error says the container's routes


def how_to_get() -> str:
    """How to get the standard file, by where heartjobs runs (on a machine, or in the Docker image)."""
    untrained = '`weights = "untrained"` runs without it (numbers not comparable)'
    if os.environ.get(IMAGE_MARKER):
        return (
            f"in the container: put {STANDARD_FILENAME} in ./weights on the host (compose mounts it at "
            f"/app/weights) and set {ENV_WEIGHTS}=/app/weights/{STANDARD_FILENAME}, or rebuild the image with "
            f"--build-arg FID_WEIGHTS=download (network) or FID_WEIGHTS=weights/{STANDARD_FILENAME} (a local "
            f"file in the build context); {untrained}"
        )
    return (
        "get it with `make fid-weights` on a machine with internet (it lands in "
        f"$TORCH_HOME/hub/checkpoints/{STANDARD_FILENAME}), or set {ENV_WEIGHTS}=/path/to/{STANDARD_FILENAME}; "
        + untrained
    )


@dataclass(frozen=True)
class InceptionWeights:
    kind: str  # "standard", "path" or "untrained"
    path: Path
    sha256: str

    @property
    def standard(self) -> bool:
        return self.sha256 == STANDARD_SHA256

    def describe(self) -> dict:
        return {**asdict(self), "path": str(self.path), "standard": self.standard}


def hub_path() -> Path:
    """Where pytorch-fid's loader (torch.hub) keeps the standard file."""
    check_torch_hub_place()
    return Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_FILENAME


def _download_standard() -> Path:
    """Fetch the standard file through pytorch-fid's own loader (which puts it at hub_path())."""
    from pytorch_fid import inception as pfi

    try:
        pfi.load_state_dict_from_url(pfi.FID_WEIGHTS_URL, progress=True)
    except Exception as exc:
        reason = one_line(exc, 160)
        raise HeartjobsError(
            f"FID weights: the standard Inception file was not found and could not be downloaded "
            f"({reason}); {how_to_get()}"
        ) from None
    return hub_path()


def resolve_weights(spec_value: str, *, download: bool = True) -> InceptionWeights:
    """Turn an [eval] weights value ("standard", "untrained" or a path) into a checked file."""
    if spec_value == "untrained":
        path = untrained_weights_file()
        return InceptionWeights("untrained", path, sha256_file(path))
    if spec_value == "standard":
        env = os.environ.get(ENV_WEIGHTS)
        if env:
            path = Path(env)
            if not path.is_file():
                raise HeartjobsError(f"FID weights: {ENV_WEIGHTS}={env}: no such file; {how_to_get()}")
        elif hub_path().is_file():
            path = hub_path()
        elif download:
            path = _download_standard()
        else:
            raise HeartjobsError(f"FID weights: the standard Inception file is not at {hub_path()}; {how_to_get()}")
        weights = InceptionWeights("standard", path, sha256_file(path))
        if not weights.standard:
            raise HeartjobsError(
                f"FID weights: {path}: sha256 {weights.sha256[:16]}... does not match the standard file "
                f"({STANDARD_SHA256[:16]}...); refusing it as 'standard' (give its path explicitly to use it)"
            )
        return weights
    path = Path(spec_value)
    if not path.is_file():
        raise HeartjobsError(f"FID weights: {path}: no such file")
    _inception_state_dict(path)  # a file nobody vouched for: checked now, not after hours of training
    return InceptionWeights("path", path, sha256_file(path))


# --- building pytorch-fid's InceptionV3 with a chosen state dict ---


@contextlib.contextmanager
def _pytorch_fid_loading(state_dict: dict) -> Iterator[None]:
    """Make pytorch-fid's loader return `state_dict` while its InceptionV3 is built (it loads strictly,
    so a file of another architecture fails loudly). It replaces a module attribute of pytorch-fid
    0.3.0 (the pinned version; see _fid_inception_skeleton)."""
    from pytorch_fid import inception as pfi

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        yield
    finally:
        pfi.load_state_dict_from_url = original


def build_inception(weights: InceptionWeights, dims: int, device: torch.device) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 returning the `dims`-feature block, with `weights`, in eval mode."""
    from pytorch_fid.inception import InceptionV3

    state_dict = _inception_state_dict(weights.path)
    try:
        with _pytorch_fid_loading(state_dict):
            model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    except RuntimeError as exc:
        raise HeartjobsError(
            f"FID weights: {weights.path}: not an FID Inception state dict ({one_line(exc, 120)})"
        ) from None
    return model.to(device).eval()


def _inception_state_dict(path: Path) -> dict:
    """A weights file's tensors, loaded without running any code it holds and checked to be the FID
    Inception's, name for name and shape for shape: loaded strictly, as pytorch-fid loads them, into the
    network built on the meta device (no memory, no compute)."""
    try:
        state_dict = load_tensors(path, "Inception weights file")
    except HeartjobsError as exc:
        raise HeartjobsError(f"FID weights: {exc}") from None
    with torch.device("meta"):
        skeleton = _fid_inception_skeleton()
    try:
        if not isinstance(state_dict, dict):
            raise TypeError(f"it holds a {type(state_dict).__name__}, not a dict")
        skeleton.load_state_dict(state_dict, strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise HeartjobsError(f"FID weights: {path}: not an FID Inception state dict ({one_line(exc, 120)})") from None
    return state_dict


def _fid_inception_skeleton() -> torch.nn.Module:
    """The FID Inception architecture with no weights loaded: pytorch-fid's fid_inception_v3() minus its
    download (torchvision's inception_v3 with pytorch-fid's patched blocks).

    This copies fid_inception_v3's body and calls pytorch-fid's private _inception_v3, and the loaders
    above patch its module-level load_state_dict_from_url: only the pyproject pin pytorch-fid==0.3.0
    makes that safe. tests/test_fid.py checks that the pin and this copy still agree."""
    from pytorch_fid import inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def untrained_state_dict(seed: int = 0) -> dict:
    """A seeded FID Inception with a variance-preserving init (PyTorch's default init leaves the 2048-d
    features near 6e-8, where FID can't tell sets apart)."""
    generator = torch.Generator().manual_seed(seed)
    net = _fid_inception_skeleton()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
    return net.state_dict()


def untrained_weights_file(seed: int = 0) -> Path:
    """The untrained weights as a file in heartjobs' cache (made once, atomically; about 96 MB)."""
    path = cache_dir() / "fid" / f"untrained_inception_seed{seed}_torch{torch.__version__.split('+')[0]}.pth"
    if not path.is_file():
        # through a file object: torch.save names the archive inside after a path's stem, which for the
        # temporary file is random, so the same weights would hash differently in every cache
        with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
            torch.save(untrained_state_dict(seed), f)
    return path
