"""A tiny Human Organ Atlas volume on disk, in the atlas' three layouts, and a real HTTP server for it with
faults on demand: what tests/test_fetch.py (and the CLI's tests) fetch from, without the network.

- `position_volume(shape)`: uint16 voxels whose value says where they are (1000 + 400 z + 20 y + x, so a
  transpose or an offset shows in the values as well as in the shape).
- `pyramid(volume, levels)`: the levels by 2 x 2 x 2 mean. Odd sizes round up (a level is ceil(n / 2)
  long, as the atlas' 6613 -> 3307 slices); an edge voxel is the mean over the voxels that exist, rounded
  half up. The fixture writes these arrays, so the expected images are computed from them independently of
  the reader.
- `write_n5(root, volume)`: N5 with the atlas' attribute keys (root: axes, downsamplingFactors, multiScale,
  resolution, units; s{L}: axes, blockSize, blosc zstd compression, dataType, dimensions in x,y,z order),
  blocks written by tensorstore's n5 driver and edge blocks truncated as the atlas' are (tensorstore writes
  whole edge blocks, so each edge block is re-encoded by tensorstore as a one-block array of its own size).
- `write_zarr(root, volume, version=2 | 3)`: the same pyramid as OME-Zarr 0.4 (zarr v2) or 0.5 (zarr v3),
  stored x,y,z like the atlas' OME-Zarr datasets, arrays "0".."4", blosc zstd, chunks of 8^3.
- `serve(root)`: a ThreadingHTTPServer on 127.0.0.1 serving the files, counting requests per path, with
  faults: 503 on the first request of each path, a stalled response past the client's low-speed timeout,
  a connection cut mid-body, a corrupt body for a path, and a gate that holds requests until released.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import product
from pathlib import Path

import numpy as np

SHAPE_ZYX = (37, 29, 23)  # unequal sizes, none a multiple of the block: a transpose or a lost edge shows
BLOCK = 8
LEVELS = 5
VOXEL_UM = 25.08
# A stalled response is given up after a second below 100 kB/s, not tensorstore's default minute below
# 256 B/s: libcurl's low-speed limit, which tensorstore reads once per process, so it is set on importing
# this module, before any request (and children inherit it).
os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS", "1")
os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES", "100000")
BLOSC_N5 = {"type": "blosc", "cname": "zstd", "clevel": 9, "shuffle": 2, "blocksize": 0}
BLOSC_ZARR2 = {"id": "blosc", "cname": "zstd", "clevel": 9, "shuffle": 2, "blocksize": 0}
BLOSC_ZARR3 = {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 9, "shuffle": "bitshuffle", "typesize": 2}}


def position_volume(shape_zyx: tuple[int, int, int] = SHAPE_ZYX) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape_zyx), indexing="ij")
    return (1000 + 400 * z + 20 * y + x).astype(np.uint16)


def downsample(array: np.ndarray) -> np.ndarray:
    """One level down: the mean of each 2 x 2 x 2 cell over the voxels that exist, rounded half up."""
    padded_shape = tuple(-(-n // 2) * 2 for n in array.shape)
    padded = np.full(padded_shape, np.nan)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    z, y, x = (n // 2 for n in padded_shape)
    cells = padded.reshape(z, 2, y, 2, x, 2)
    return np.floor(np.nanmean(cells, axis=(1, 3, 5)) + 0.5).astype(array.dtype)


def pyramid(volume: np.ndarray, levels: int = LEVELS) -> list[np.ndarray]:
    out = [volume]
    for _ in range(levels - 1):
        out.append(downsample(out[-1]))
    return out


def _open_ts(spec: dict):
    import tensorstore as ts

    return ts.open(spec, create=True, delete_existing=True).result()


# --- N5 ---


def n5_block_key(level: int, block_zyx: tuple[int, int, int]) -> str:
    bz, by, bx = block_zyx
    return f"s{level}/{bx}/{by}/{bz}"


def _n5_level_metadata(shape_xyz: list[int], block_xyz: list[int]) -> dict:
    return {
        "axes": ["x", "y", "z"],
        "blockSize": block_xyz,
        "compression": BLOSC_N5,
        "dataType": "uint16",
        "dimensions": shape_xyz,
    }


def write_n5(root: Path, volume_zyx: np.ndarray, block: tuple[int, int, int] = (BLOCK,) * 3, levels: int = LEVELS):
    """The pyramid of `volume_zyx` as N5 under `root`; returns the level arrays (z, y, x)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    arrays = pyramid(volume_zyx, levels)
    (root / "attributes.json").write_text(
        json.dumps(
            {
                "n5": "2.5.1",
                "axes": ["x", "y", "z"],
                "downsamplingFactors": [2**level for level in range(levels)],
                "multiScale": True,
                "resolution": [VOXEL_UM] * 3,
                "units": ["um", "um", "um"],
            }
        )
    )
    block_xyz = list(block[::-1])
    for level, array in enumerate(arrays):
        shape_xyz = list(array.shape[::-1])
        store = _open_ts(
            {
                "driver": "n5",
                "kvstore": {"driver": "file", "path": str(root / f"s{level}") + "/"},
                "metadata": _n5_level_metadata(shape_xyz, block_xyz),
            }
        )
        store.write(array.transpose(2, 1, 0)).result()
        _truncate_edge_blocks(root, level, array, block)
    return arrays


def _truncate_edge_blocks(root: Path, level: int, array: np.ndarray, block: tuple[int, int, int]) -> None:
    """Rewrite each edge block cut to the volume, as the atlas stores them: tensorstore encodes it as the
    single block of an array its own size, and that block file takes the place of the whole-block one."""
    grid = [range(-(-n // b)) for n, b in zip(array.shape, block, strict=True)]
    with tempfile.TemporaryDirectory(prefix="h29-n5-edge-") as tmp:
        for index in product(*grid):
            region = tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(index, block, array.shape, strict=True))
            part = array[region]
            if part.shape == tuple(block):
                continue
            shape_xyz = list(part.shape[::-1])
            one = _open_ts(
                {
                    "driver": "n5",
                    "kvstore": {"driver": "file", "path": tmp + "/"},
                    "metadata": _n5_level_metadata(shape_xyz, shape_xyz),
                }
            )
            one.write(part.transpose(2, 1, 0)).result()
            shutil.copyfile(Path(tmp) / "0" / "0" / "0", root / n5_block_key(level, index))


# --- OME-Zarr ---


def zarr_block_key(version: int, level: int, block_zyx: tuple[int, int, int]) -> str:
    bz, by, bx = block_zyx
    return f"{level}/{bx}/{by}/{bz}" if version == 2 else f"{level}/c/{bx}/{by}/{bz}"


def _multiscales(levels: int, version: str) -> list[dict]:
    return [
        {
            "version": version,
            "name": "fixture",
            "axes": [{"name": axis, "type": "space", "unit": "micrometer"} for axis in ("x", "y", "z")],
            "datasets": [
                {
                    "path": str(level),
                    "coordinateTransformations": [{"type": "scale", "scale": [VOXEL_UM * 2**level] * 3}],
                }
                for level in range(levels)
            ],
        }
    ]


def write_zarr(
    root: Path, volume_zyx: np.ndarray, version: int = 2, block: tuple[int, int, int] = (BLOCK,) * 3, levels=LEVELS
):
    """The pyramid of `volume_zyx` as OME-Zarr 0.4 (zarr v2) or 0.5 (zarr v3) under `root`, stored x,y,z;
    returns the level arrays (z, y, x)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    arrays = pyramid(volume_zyx, levels)
    if version == 2:
        (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (root / ".zattrs").write_text(json.dumps({"multiscales": _multiscales(levels, "0.4")}))
    else:
        group = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"version": "0.5"}}}
        group["attributes"]["ome"]["multiscales"] = _multiscales(levels, "0.5")
        (root / "zarr.json").write_text(json.dumps(group))
    chunks = list(block[::-1])
    for level, array in enumerate(arrays):
        kvstore = {"driver": "file", "path": str(root / str(level)) + "/"}
        shape = list(array.shape[::-1])
        if version == 2:
            metadata = {
                "shape": shape,
                "chunks": chunks,
                "dtype": "<u2",
                "compressor": BLOSC_ZARR2,
                "fill_value": 0,
                "order": "C",
                "filters": None,
                "dimension_separator": "/",
            }
            spec = {"driver": "zarr", "kvstore": kvstore, "metadata": metadata}
        else:
            metadata = {
                "shape": shape,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                "chunk_key_encoding": {"name": "default"},
                "data_type": "uint16",
                "fill_value": 0,
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, BLOSC_ZARR3],
                "dimension_names": ["x", "y", "z"],
            }
            spec = {"driver": "zarr3", "kvstore": kvstore, "metadata": metadata}
        _open_ts(spec).write(array.transpose(2, 1, 0)).result()
    return arrays


# --- the HTTP server ---


@dataclass
class Faults:
    """What the server does wrong. `fail_first` answers the first request of every path with `fail_status`; `stall`
    and `cut` hit the first answer with data of a path they name (a retry then gets the file); `corrupt`
    answers every request of its paths with those bytes; `hold` paths wait for `release` (set by the test)
    before they are answered."""

    fail_first: bool = False  # `fail_status` on the first request of every path
    fail_status: int = 503
    stall: set[str] = field(default_factory=set)  # send half the body, then nothing until the client gives up
    cut: set[str] = field(default_factory=set)  # send half the body, then close the connection
    corrupt: dict[str, bytes] = field(default_factory=dict)
    hold: Callable[[str], bool] = lambda path: False
    release: threading.Event = field(default_factory=threading.Event)


class Server:
    def __init__(self, root: Path, faults: Faults):
        self.root, self.faults = Path(root), faults
        self.requests: Counter[str] = Counter()  # path -> requests answered with data (status 200)
        self.seen: Counter[str] = Counter()  # path -> every request
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # a client keeping its connection open must not hold up the stop
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def block_requests(self) -> Counter[str]:
        """The answered requests for anything but metadata (attributes.json, .zarray, zarr.json, ...)."""
        meta = ("attributes.json", ".zarray", ".zattrs", ".zgroup", "zarr.json")
        with self.lock:
            return Counter({p: n for p, n in self.requests.items() if not p.endswith(meta)})

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.seen.clear()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?")[0].lstrip("/")
                faults = server.faults
                with server.lock:
                    server.seen[path] += 1
                    first = server.seen[path] == 1
                if faults.hold(path):
                    while not (faults.release.wait(0.05) or server.stopping.is_set()):
                        pass
                if faults.fail_first and first:
                    return self._status(faults.fail_status)
                file = (server.root / path).resolve()
                if path in faults.corrupt:
                    data = faults.corrupt[path]
                elif file.is_file() and file.is_relative_to(server.root.resolve()):
                    data = file.read_bytes()
                else:
                    return self._status(404)
                with server.lock:
                    server.requests[path] += 1
                    first_answer = server.requests[path] == 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not body:
                    return
                if first_answer and (path in faults.stall or path in faults.cut):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if path in faults.stall:  # past the client's low-speed timeout, then give up
                        server.stopping.wait(10)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def _status(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@contextlib.contextmanager
def serve(root: Path, faults: Faults | None = None) -> Iterator[Server]:
    """Serve the files under `root` on 127.0.0.1 (a free port) while the block runs."""
    server = Server(root, faults or Faults())
    thread = threading.Thread(target=server.httpd.serve_forever, args=(0.02,), daemon=True)  # quick to stop
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.faults.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
