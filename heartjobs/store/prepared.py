"""A prepared set's on-disk format, and the trainer's view of it: manifest.json and images.npy (N x H x W
uint8), read as a uint8 tensor N x 1 x H x W. heartjobs.data.prepare writes it with these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line

MANIFEST_KIND = "heartjobs-prepared"
# Bump when the way images are computed changes, so old sets are not mistaken for current ones.
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
IMAGES_FILE = "images.npy"
IMAGES_DTYPE = np.uint8
CONTACT_SHEET = "contact_sheet.png"
PNG_FOLDER = "png"


def _check_manifest(path: Path, manifest: dict) -> None:
    """The fields readers rely on, with the types they need: one line naming the field otherwise."""
    shape = manifest.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise HeartjobsError(f"{path}: shape: expected [count, channels, height, width], got {shape!r}")
    for key in ("count",):
        if not isinstance(manifest.get(key), int) or isinstance(manifest.get(key), bool):
            raise HeartjobsError(f"{path}: {key}: expected a whole number, got {manifest.get(key)!r}")
    if not isinstance(manifest.get("content_hash"), str):
        raise HeartjobsError(f"{path}: content_hash: expected a string, got {manifest.get('content_hash')!r}")


def read_manifest(folder: Path) -> dict | None:
    """A set's manifest.json, or None where there is none (or it is not valid JSON)."""
    return atomic.read_json(Path(folder) / MANIFEST_FILE) or None


@dataclass(frozen=True)
class PreparedSet:
    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: Path) -> PreparedSet:
        """Open a prepared set; a folder that is not one is reported by name and field."""
        path = Path(path)
        if not path.is_dir():
            raise HeartjobsError(f"{path}: no prepared set here (run `heartjobs data prepare` first)")
        manifest = read_manifest(path)
        if manifest is None:
            raise HeartjobsError(f"{path / MANIFEST_FILE}: missing or not valid JSON")
        if manifest.get("kind") != MANIFEST_KIND:
            raise HeartjobsError(f"{path / MANIFEST_FILE}: kind: expected {MANIFEST_KIND!r}")
        if not (path / IMAGES_FILE).is_file():
            raise HeartjobsError(f"{path / IMAGES_FILE}: missing")
        _check_manifest(path / MANIFEST_FILE, manifest)
        return cls(path, manifest)

    @cached_property
    def images(self) -> np.ndarray:
        """N x H x W uint8, read into memory once: never a memory map, because a set rewritten or truncated
        under a running job would kill it with SIGBUS (training and evaluation both read from here)."""
        try:
            array = np.load(self.path / IMAGES_FILE)
        except (OSError, ValueError, EOFError) as exc:  # truncated, garbled, not a .npy at all
            raise HeartjobsError(f"{self.path / IMAGES_FILE}: unreadable ({one_line(exc, 200)})") from None
        expected = tuple(self.manifest["shape"][:1] + self.manifest["shape"][2:])
        if array.dtype != IMAGES_DTYPE or array.shape != expected:
            raise HeartjobsError(
                f"{self.path / IMAGES_FILE}: shape {array.shape} {array.dtype} does not match "
                f"manifest shape {list(expected)} uint8"
            )
        return array

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def size(self) -> int:
        return int(self.manifest["shape"][-1])

    @property
    def channels(self) -> int:
        return int(self.manifest["shape"][1])

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])

    def tensor(self, device: str | None = None):
        """The whole set as a uint8 torch tensor N x 1 x H x W, on `device` (default: CPU, sharing `images`)."""
        import torch

        images = torch.from_numpy(self.images).unsqueeze(1)
        return images if device is None else images.to(device)
