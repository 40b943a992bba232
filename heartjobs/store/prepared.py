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
    """The fields readers rely on, with the types they need and agreeing with each other (one count, one
    channel, square images of the size it was prepared at): one line naming the field otherwise."""
    shape = manifest.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(_whole(n) and n > 0 for n in shape)):
        raise HeartjobsError(f"{path}: shape: expected [count, channels, height, width], got {shape!r}")
    count, channels, height, width = shape
    if not _whole(manifest.get("count")):
        raise HeartjobsError(f"{path}: count: expected a whole number, got {manifest.get('count')!r}")
    if manifest["count"] != count:
        raise HeartjobsError(f"{path}: count: {manifest['count']}, but shape says {count} images")
    if channels != 1:
        raise HeartjobsError(f"{path}: shape: {channels} channels; a prepared set has one (grayscale CT)")
    if height != width:
        raise HeartjobsError(f"{path}: shape: {height} x {width} images; a prepared set's images are square")
    parameters = manifest.get("parameters")
    size = parameters.get("size") if isinstance(parameters, dict) else None
    if size is not None and size != width:
        raise HeartjobsError(f"{path}: shape: {width} px images, but parameters.size says {size!r}")
    dtype = np.dtype(IMAGES_DTYPE).name
    if manifest.get("dtype", dtype) != dtype:
        raise HeartjobsError(f"{path}: dtype: expected {dtype!r}, got {manifest.get('dtype')!r}")
    if not isinstance(manifest.get("content_hash"), str):
        raise HeartjobsError(f"{path}: content_hash: expected a string, got {manifest.get('content_hash')!r}")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load_manifest(path: Path) -> dict:
    """manifest.json as a dict; one that can't be read says why (the system's reason: permission denied,
    a directory, a link loop), one that is not a JSON object says that."""
    try:
        if path.exists() and not (path.is_file() or path.is_dir()):  # a FIFO would hang the read
            raise HeartjobsError(f"{path}: not a regular file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HeartjobsError(f"{path}: missing") from None
    except OSError as exc:
        raise HeartjobsError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None
    except UnicodeDecodeError:
        raise HeartjobsError(f"{path}: not UTF-8 text, so not valid JSON") from None
    return atomic.json_object(text, path)


def read_manifest(folder: Path) -> dict | None:
    """A set's manifest.json, or None where there is none (or it is not valid JSON): for `data prepare`,
    which makes a set anew where there is none it can take as up to date. Opening a set reports why."""
    return atomic.read_json(Path(folder) / MANIFEST_FILE) or None


def _array_header(path: Path) -> tuple[tuple, np.dtype]:
    """The shape and dtype images.npy says it holds, from its header alone (the array is read later)."""
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in headers:  # np.save writes 1.0 for a uint8 array; 2.0 only for huge headers
                raise ValueError(f".npy format version {version[0]}.{version[1]}, not one heartjobs writes")
            shape, _, dtype = headers[version](f)
    except (OSError, ValueError, EOFError) as exc:
        raise HeartjobsError(f"{path}: unreadable ({one_line(exc, 200)})") from None
    return shape, dtype


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
        manifest = _load_manifest(path / MANIFEST_FILE)
        if manifest.get("kind") != MANIFEST_KIND:
            raise HeartjobsError(f"{path / MANIFEST_FILE}: kind: expected {MANIFEST_KIND!r}")
        if not (path / IMAGES_FILE).is_file():
            raise HeartjobsError(f"{path / IMAGES_FILE}: missing")
        _check_manifest(path / MANIFEST_FILE, manifest)
        prepared = cls(path, manifest)
        shape, dtype = _array_header(path / IMAGES_FILE)  # before training, not an IndexError inside it
        prepared._check_array(shape, dtype)
        return prepared

    @cached_property
    def images(self) -> np.ndarray:
        """N x H x W uint8, read into memory once: never a memory map, because a set rewritten or truncated
        under a running job would kill it with SIGBUS (training and evaluation both read from here)."""
        try:
            array = np.load(self.path / IMAGES_FILE)
        except (OSError, ValueError, EOFError) as exc:  # truncated, garbled, not a .npy at all
            raise HeartjobsError(f"{self.path / IMAGES_FILE}: unreadable ({one_line(exc, 200)})") from None
        self._check_array(array.shape, array.dtype)
        return array

    def _check_array(self, shape: tuple, dtype: np.dtype) -> None:
        """images.npy holds what the manifest says: count x height x width, uint8."""
        expected = tuple(self.manifest["shape"][:1] + self.manifest["shape"][2:])
        if dtype != IMAGES_DTYPE or tuple(shape) != expected:
            raise HeartjobsError(
                f"{self.path / IMAGES_FILE}: shape {tuple(shape)} {dtype} does not match "
                f"{self.path / MANIFEST_FILE} shape {list(expected)} uint8"
            )

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
