"""One multiscale volume of the Human Organ Atlas (N5, or OME-Zarr on zarr v2 or v3), read through tensorstore
block by block, as (z, y, x) uint16 slabs.

The atlas stores its volumes x,y,z (N5's `dimensions`, OME-Zarr's `axes`); `read` always returns z, y, x,
z being the slice axis. Every block is its own read, so a block the store does not hold (the store's fill
value, zeros) is known by name, and one that does not decode (a bad header, a wrong size, a codec error) is
a one-line HeartjobsError naming its key, level and block coordinates. HTTP goes through tensorstore's
http kvstore: 429, 5xx, timeouts and cut connections are retried with exponential backoff
(RETRIES); a stalled transfer is abandoned by libcurl's low-speed limit (tensorstore's default: below 256
bytes/s for 60 s; TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS and TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES change
it, read once per process) and then retried. Requests in flight and decoding threads are bounded
(HTTP_REQUESTS_IN_FLIGHT, and as many decoding threads as CPUs), and nothing is cached: a slab read once is not kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from math import ceil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line

STORE_FORMATS = ("n5", "zarr")
AXES_ZYX = ("z", "y", "x")
# Exponential backoff from 0.1 s up to 32 s, 12 retries: about two and a half minutes before a request is
# given up (tensorstore adds a jitter of up to the initial delay).
RETRIES = {"max_retries": 12, "initial_delay": "0.1s", "max_delay": "32s"}
HTTP_REQUESTS_IN_FLIGHT = 32


def _context():
    import tensorstore as ts

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ts.Context(
        {
            "http_request_retries": RETRIES,
            "http_request_concurrency": {"limit": HTTP_REQUESTS_IN_FLIGHT},
            "file_io_concurrency": {"limit": HTTP_REQUESTS_IN_FLIGHT},
            "data_copy_concurrency": {"limit": max(1, cpus)},
            "cache_pool": {"total_bytes_limit": 0},
        }
    )


@dataclass(frozen=True)
class Level:
    """One level of the pyramid: its shape and block shape (z, y, x), dtype, and downsampling factor
    against level 0 (per axis; the atlas' pyramids are isotropic, 2x per level)."""

    index: int
    shape_zyx: tuple[int, int, int]
    block_zyx: tuple[int, int, int]
    dtype: str
    factor: int

    @property
    def grid_zyx(self) -> tuple[int, int, int]:
        """How many blocks along z, y, x."""
        return tuple(ceil(n / b) for n, b in zip(self.shape_zyx, self.block_zyx, strict=True))

    @property
    def block_count(self) -> int:
        return int(np.prod(self.grid_zyx))

    @property
    def raw_bytes(self) -> int:
        return int(np.prod(self.shape_zyx)) * np.dtype(self.dtype).itemsize

    def block_slabs(self, z0: int, z1: int) -> range:
        """The block rows along z that slices z0..z1 (exclusive) fall in."""
        return range(z0 // self.block_zyx[0], ceil(z1 / self.block_zyx[0]))


def _reason(exc: BaseException) -> str:
    """tensorstore's message without its source locations, on one line."""
    return one_line(re.sub(r"\s*\[source locations=.*?\]", "", str(exc), flags=re.S), 300)


def _status(exc: BaseException) -> str:
    """The absl status code a tensorstore error starts with (NOT_FOUND, FAILED_PRECONDITION, ...)."""
    match = re.match(r"([A-Z_]+):", str(exc))
    return match.group(1) if match else ""


@dataclass(frozen=True)
class _Layout:
    """How one level is stored: tensorstore driver and path, its axes in stored order, its block keys."""

    path: str  # below the volume's URL, no slashes at the ends
    driver: str  # n5 | zarr | zarr3
    axes: tuple[str, ...]  # stored order, e.g. ("x", "y", "z")
    key_prefix: str  # before the block indices: "s0/", "0/", "0/c/"
    separator: str
    factor: int

    @property
    def to_zyx(self) -> list[int]:
        """The transpose that turns a stored-order array into (z, y, x)."""
        return [self.axes.index(a) for a in AXES_ZYX]

    def stored(self, region_zyx: tuple) -> tuple:
        """A (z, y, x) index in the store's axis order."""
        return tuple(region_zyx[AXES_ZYX.index(a)] for a in self.axes)

    def key(self, block_zyx: tuple[int, int, int]) -> str:
        by_axis = dict(zip(AXES_ZYX, block_zyx, strict=True))
        return self.key_prefix + self.separator.join(str(by_axis[a]) for a in self.axes)


class _Source:
    """The volume's key-value store (http, file) and reading its JSON metadata through it."""

    def __init__(self, url: str, context):
        import tensorstore as ts

        self.url = url if url.endswith("/") else url + "/"
        self.context = context
        parts = urlsplit(self.url)
        if parts.scheme in ("http", "https"):
            self.base = {"driver": "http", "base_url": f"{parts.scheme}://{parts.netloc}"}
            self.root = parts.path
        elif parts.scheme == "file":
            self.base, self.root = {"driver": "file"}, unquote(parts.path)
        elif parts.scheme == "":
            self.base, self.root = {"driver": "file"}, str(Path(url).absolute()) + "/"
        else:
            raise HeartjobsError(f"{url}: not an http(s):// or file:// URL or a folder")
        self.kvstore = ts.KvStore.open(self.spec(""), context=context).result()

    def spec(self, path: str) -> dict:
        return {**self.base, "path": self.root + path}

    def read_bytes(self, key: str, future=None) -> bytes | None:
        """The bytes stored at `key` (or the result of `future`, a read of it started earlier); None where
        there is nothing."""
        try:
            result = (future or self.kvstore.read(key)).result()
        except Exception as exc:
            raise HeartjobsError(f"{self.url}{key}: could not be read ({_reason(exc)})") from None
        return None if result.state == "missing" else bytes(result.value)

    def read_jsons(self, keys: list[str], what: str) -> list[dict]:
        """Several JSON objects, read at once (one round trip's wait over HTTP, not one each)."""
        futures = [self.kvstore.read(key) for key in keys]
        return [self.read_json(key, what, future) for key, future in zip(keys, futures, strict=True)]

    def read_json(self, key: str, what: str, future=None) -> dict:
        data = self.read_bytes(key, future)
        if data is None:
            raise HeartjobsError(f"{self.url}{key}: missing; is this {what}?")
        return atomic.json_object(data, f"{self.url}{key}")


def _axes_names(axes, where: str) -> tuple[str, ...]:
    names = tuple(a.get("name") if isinstance(a, dict) else a for a in axes or ())
    if sorted(names) != sorted(AXES_ZYX):
        raise HeartjobsError(f"{where}: axes: expected x, y and z, got {list(names)!r}")
    return names


def _n5_layouts(source: _Source) -> list[_Layout]:
    """N5: the levels s0, s1, ... the root's downsamplingFactors lists (each a number or one per axis)."""
    root = source.read_json("attributes.json", "an N5 volume")
    factors = root.get("downsamplingFactors")
    if not isinstance(factors, list) or not factors:
        raise HeartjobsError(f"{source.url}attributes.json: downsamplingFactors: expected a list, got {factors!r}")
    layouts = []
    keys = [f"s{index}/attributes.json" for index in range(len(factors))]
    for index, (factor, level) in enumerate(
        zip(factors, source.read_jsons(keys, "a level of an N5 volume"), strict=True)
    ):
        axes = _axes_names(level.get("axes") or root.get("axes") or ["x", "y", "z"], f"{source.url}s{index}")
        factor = factor[0] if isinstance(factor, list) and factor else factor
        layouts.append(_Layout(f"s{index}", "n5", axes, f"s{index}/", "/", int(factor)))
    return layouts


def _zarr_layouts(source: _Source) -> list[_Layout]:
    """OME-Zarr: the multiscales' datasets, zarr v3 (zarr.json, OME-Zarr 0.5) or v2 (.zattrs, 0.4)."""
    group = source.read_bytes("zarr.json")
    if group is not None:
        attributes = source.read_json("zarr.json", "an OME-Zarr volume").get("attributes", {})
        multiscales = attributes.get("ome", attributes).get("multiscales")
        where, version = f"{source.url}zarr.json", 3
    else:
        multiscales = source.read_json(".zattrs", "an OME-Zarr volume").get("multiscales")
        where, version = f"{source.url}.zattrs", 2
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise HeartjobsError(f"{where}: multiscales: expected a list of one multiscale image, got {multiscales!r}")
    axes = _axes_names(multiscales[0].get("axes"), where)
    datasets = multiscales[0].get("datasets") or []
    scales = [_z_scale(d, axes) for d in datasets]
    layouts = []
    paths = [str(dataset.get("path", "")).strip("/") for dataset in datasets]
    keys = [f"{path}/zarr.json" if version == 3 else f"{path}/.zarray" for path in paths]
    arrays = source.read_jsons(keys, "a level of an OME-Zarr volume")
    for index, (path, array) in enumerate(zip(paths, arrays, strict=True)):
        factor = round(scales[index] / scales[0]) if scales[0] and scales[index] else 2**index
        if version == 3:
            encoding = array.get("chunk_key_encoding") or {"name": "default"}
            separator = (encoding.get("configuration") or {}).get("separator")
            if encoding.get("name") == "v2":
                prefix, separator = f"{path}/", separator or "."
            else:
                prefix, separator = f"{path}/c/", separator or "/"
            layouts.append(_Layout(path, "zarr3", axes, prefix, separator, factor))
        else:
            separator = array.get("dimension_separator") or "."
            layouts.append(_Layout(path, "zarr", axes, f"{path}/", separator, factor))
    if not layouts:
        raise HeartjobsError(f"{where}: multiscales: no datasets")
    return layouts


def _z_scale(dataset: dict, axes: tuple[str, ...]) -> float | None:
    for transform in dataset.get("coordinateTransformations") or []:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            scale = transform.get("scale")
            if isinstance(scale, list) and len(scale) == len(axes):
                return float(scale[axes.index("z")])
    return None


class PendingSlab:
    """The block reads of one slab, started; `result()` waits for them. tensorstore decodes each block
    straight into the slab's array (through a view of it in the store's axis order), so a slab in flight
    costs its own bytes, not a second copy in separate blocks."""

    def __init__(self, volume: Volume, level: int, z0: int, z1: int):
        import tensorstore as ts

        self.volume, self.level, self.z0, self.z1 = volume, level, z0, z1
        info, layout = volume.levels[level], volume._layouts[level]
        bz0, bz1 = info.block_slabs(z0, z1)[0], info.block_slabs(z0, z1)[-1] + 1
        self.zstart = bz0 * info.block_zyx[0]
        zstop = min(bz1 * info.block_zyx[0], info.shape_zyx[0])
        self.array = np.zeros((zstop - self.zstart, *info.shape_zyx[1:]), dtype=info.dtype)
        stored = ts.array(self.array)  # shares the array's memory
        stored = stored[ts.d[[AXES_ZYX.index(a) for a in layout.axes]].transpose[:]]
        self.copies = []
        grid = info.grid_zyx
        for block in product(range(bz0, bz1), range(grid[1]), range(grid[2])):
            region = tuple(
                slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(block, info.block_zyx, info.shape_zyx, strict=True)
            )
            local = (slice(region[0].start - self.zstart, region[0].stop - self.zstart), *region[1:])
            source = volume._stores[level][layout.stored(region)]
            self.copies.append((block, stored[layout.stored(local)].write(source)))

    def result(self, advance: Callable[[int], None] | None = None, missing: list[str] | None = None) -> np.ndarray:
        """Slices z0..z1 as (z, y, x); a block the store lacks is zeros and its key is added to `missing`."""
        volume, layout = self.volume, self.volume._layouts[self.level]
        for block, copy in self.copies:
            try:
                copy.result()
            except Exception as exc:
                if _status(exc) != "NOT_FOUND":
                    raise volume._block_error(self.level, block, exc) from None
                if missing is not None:
                    missing.append(layout.key(block))
            if advance is not None:
                advance(1)
        self.copies = []
        return self.array[self.z0 - self.zstart : self.z1 - self.zstart]


class Volume:
    """A multiscale volume: `levels` (level 0 the finest), its `url` and `store_format`."""

    def __init__(self, url: str, store_format: str, source: _Source, layouts: list[_Layout], stores: list):
        self.url, self.store_format = source.url, store_format
        self._source, self._layouts, self._stores = source, layouts, stores
        self.levels: list[Level] = []
        for index, (layout, store) in enumerate(zip(layouts, stores, strict=True)):
            perm = layout.to_zyx
            shape = tuple(int(store.domain.shape[i]) for i in perm)
            chunk = store.chunk_layout.read_chunk.shape
            block = tuple(int(chunk[i]) for i in perm)
            self.levels.append(Level(index, shape, block, store.dtype.name, layout.factor))

    def _block_error(self, level: int, block: tuple[int, int, int], exc: BaseException) -> HeartjobsError:
        key = self._layouts[level].key(block)
        bz, by, bx = block
        where = f"level {level}, block z={bz} y={by} x={bx}"
        if _status(exc) in ("FAILED_PRECONDITION", "DATA_LOSS", "INVALID_ARGUMENT", "OUT_OF_RANGE"):
            return HeartjobsError(f"{self.url}{key}: corrupt block ({where}): {_reason(exc)}")
        return HeartjobsError(f"{self.url}{key}: could not be read ({where}): {_reason(exc)}")

    def block_key(self, level: int, block_zyx: tuple[int, int, int]) -> str:
        """The block's key below the volume's URL (N5: s{L}/x/y/z)."""
        return self._layouts[level].key(block_zyx)

    def block_keys(self, level: int, z0: int, z1: int) -> list[str]:
        """The keys of the blocks that slices z0..z1 of `level` are read from."""
        grid = self.levels[level].grid_zyx
        rows = self.levels[level].block_slabs(z0, z1)
        return [self.block_key(level, b) for b in product(rows, range(grid[1]), range(grid[2]))]

    def start_read(self, level: int, z0: int, z1: int) -> PendingSlab:
        """Start reading slices z0..z1 of `level` (every block they touch); `.result()` waits."""
        shape = self.levels[level].shape_zyx
        if not 0 <= z0 < z1 <= shape[0]:
            raise HeartjobsError(f"{self.url}: slices {z0}:{z1} outside level {level}'s 0:{shape[0]}")
        return PendingSlab(self, level, z0, z1)

    def read(self, level: int, z0: int, z1: int, *, missing: list[str] | None = None) -> np.ndarray:
        """Slices z0..z1 of `level`, whole y and x, as uint16 (z, y, x); blocks the store lacks are zeros,
        their keys added to `missing`."""
        return self.start_read(level, z0, z1).result(missing=missing)

    def sample_block_bytes(self, level: int, n: int) -> list[tuple[int, int]]:
        """(stored bytes, decoded bytes) of up to n blocks spread over `level` (blocks the store lacks are
        left out): what the dry run estimates the compressed size from. An N5 edge block decodes to its
        truncated size, a zarr chunk always to a whole chunk."""
        info = self.levels[level]
        grid = info.grid_zyx
        picks = np.unique(np.linspace(0, info.block_count - 1, min(n, info.block_count)).round().astype(int))
        itemsize = np.dtype(info.dtype).itemsize
        sizes = []
        for flat in picks:
            block = np.unravel_index(int(flat), grid)
            data = self._source.read_bytes(self.block_key(level, tuple(int(i) for i in block)))
            if data is None:
                continue
            if self._layouts[level].driver == "n5":
                extent = [min(b, n - i * b) for i, b, n in zip(block, info.block_zyx, info.shape_zyx, strict=True)]
            else:
                extent = list(info.block_zyx)
            sizes.append((len(data), int(np.prod(extent)) * itemsize))
        return sizes


def open_volume(url: str, store_format: str) -> Volume:
    """The multiscale volume at `url` (http(s)://, file:// or a folder): `store_format` "n5" or "zarr"
    (OME-Zarr; zarr v3 where the root has zarr.json, else v2)."""
    import tensorstore as ts

    if store_format not in STORE_FORMATS:
        raise HeartjobsError(f"{url}: store format {store_format!r}: expected one of {', '.join(STORE_FORMATS)}")
    context = _context()
    source = _Source(url, context)
    layouts = _n5_layouts(source) if store_format == "n5" else _zarr_layouts(source)
    specs = [
        {"driver": layout.driver, "kvstore": source.spec(layout.path + "/"), "fill_missing_data_reads": False}
        for layout in layouts
    ]
    opening = [ts.open(spec, read=True, context=context) for spec in specs]
    stores = []
    for layout, future in zip(layouts, opening, strict=True):
        try:
            stores.append(future.result())
        except Exception as exc:
            raise HeartjobsError(
                f"{source.url}{layout.path}: not a readable {layout.driver} array ({_reason(exc)})"
            ) from None
    return Volume(url, store_format, source, layouts, stores)
