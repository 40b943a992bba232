"""Content hashes: of files, of numpy arrays and of JSON-able objects (for cache keys)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hash of dtype, shape and bytes: two arrays hash equal exactly when they are equal."""
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}{tuple(array.shape)}".encode())
    flat = np.ascontiguousarray(array).reshape(-1)
    step = max(1, _CHUNK // max(1, array.itemsize))
    for start in range(0, flat.size, step):
        h.update(flat[start : start + step].tobytes())
    return h.hexdigest()


def sha256_json(obj: object) -> str:
    """Stable hash of a JSON-able object (keys sorted, no whitespace)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
