"""JPEG 2000 through glymur: HiP-CT-like writing and reduced-resolution reading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from heartjobs.errors import HeartjobsError

JP2_SUFFIXES = (".jp2", ".j2k", ".j2c", ".jpx", ".jpf")
# HiP-CT slices are lossy at about 10:1 with many resolution levels, in tiles.
HIPCT_CRATIO = 10
HIPCT_TILE = 256
MAX_NUMRES = 6


def _glymur():
    import glymur

    if glymur.version.openjpeg_version_tuple < (2, 4, 0):
        raise HeartjobsError(
            f"glymur found OpenJPEG {glymur.version.openjpeg_version or 'none'}; install libopenjp2-7 "
            "(apt-get install -y libopenjp2-7) or run `make install`"
        )
    return glymur


def numres_for(shape: tuple[int, int], tile: int = HIPCT_TILE) -> int:
    """Resolution levels for an image: as many as HiP-CT uses (6), fewer when the tile is too small."""
    smallest = min(tile, *shape)
    return max(1, min(MAX_NUMRES, int(np.log2(smallest)) + 1))


def write_hipct_like(path: Path, image: np.ndarray) -> None:
    """Write a 2-D uint16 image as a lossy (10:1), tiled, multi-resolution JPEG 2000 file."""
    glymur = _glymur()
    h, w = image.shape
    tile = (min(HIPCT_TILE, h), min(HIPCT_TILE, w))
    glymur.Jp2k(
        str(path),
        data=image,
        numres=numres_for((h, w)),
        cratios=[HIPCT_CRATIO],
        irreversible=True,
        tilesize=tile,
    )


def _open(path: Path):
    """Open a file with glymur; its warnings are kept quiet, but a box running past the end of the file
    means the file was cut short, and that is an error."""
    glymur = _glymur()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jp = glymur.Jp2k(str(path))
    for w in caught:
        if "exceeds the length of the file" in str(w.message):
            raise HeartjobsError(f"{path}: truncated JPEG 2000 file ({w.message})")
    return jp


def header(path: Path) -> tuple[tuple[int, ...], int, int]:
    """(shape, bits per sample, decomposition levels) from the file's header alone, no pixel decoding."""
    jp = _open(path)
    siz = jp.codestream.segment[1]
    cod = jp.codestream.segment[2]
    return tuple(jp.shape), int(siz.bitdepth[0]), int(cod.num_res)


def reduction_for(side: int, target: int, levels: int) -> int:
    """The largest resolution reduction r (decode at 1/2^r) that keeps `side` >= `target` pixels."""
    r = 0
    while r < levels and -(-side // 2 ** (r + 1)) >= target:
        r += 1
    return r


def read(path: Path, reduce: int = 0) -> np.ndarray:
    """Decode a JPEG 2000 file at 1/2^reduce of its size (only that resolution level is decoded)."""
    jp = _open(path)
    step = 2**reduce
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jp[::step, ::step]
