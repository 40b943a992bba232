"""Turn a folder of CT slices into one training set: images.npy (N x size x size uint8) + manifest.json.

Three passes over the sources, each in a process pool: read the headers (shapes must agree), decode a
sample to fix one intensity window for the whole stack, then decode every slice through that window;
then the manifest and the views (contact sheet, PNGs) are written beside images.npy.
The thesis does not say how it turned its 16-bit slices into 8-bit images, so the window is heartjobs'
assumption: the sample's percentiles by default, or with `window="full"` the plain full range (value / 257
for 16-bit data), so that how much the choice moves FID/FRD can be measured; the manifest says which.
The set is built in a temporary folder and renamed into place, so a failure leaves nothing behind;
the same sources and parameters find the finished set and return at once. The format's names are
heartjobs.store.prepared's, which reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from heartjobs import __version__, atomic
from heartjobs.data import slices
from heartjobs.data.phantom import phantom_of
from heartjobs.data.pool import ordered_map, worker_count
from heartjobs.data.slices import SliceInfo, Window
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_array, sha256_file, sha256_json
from heartjobs.progress import track
from heartjobs.store.prepared import (
    CONTACT_SHEET,
    FORMAT_VERSION,
    IMAGES_DTYPE,
    IMAGES_FILE,
    MANIFEST_FILE,
    MANIFEST_KIND,
    PNG_FOLDER,
    read_manifest,
)

WINDOW_SAMPLE = 32
DEFAULT_PERCENTILES = (0.5, 99.5)
WINDOW_MODES = ("percentiles", "full")
# Said in the manifest of every set converted from more than 8 bits: the conversion is not the thesis'.
WINDOW_ASSUMPTION = (
    "{bits} -> 8 bit conversion: the thesis does not say how it converted; this is heartjobs' choice "
    "(--window percentiles: the 0.5/99.5 percentiles of a sample, the default; --window full: the whole "
    "range, value / 257 for 16-bit data)"
)


@dataclass(frozen=True)
class PrepareParams:
    size: int = 256
    every: int = 1
    # "percentiles": window_percentiles below; "full": the source's whole range, value / 257 for 16 bits.
    window: Literal["percentiles", "full"] = "percentiles"
    # None: (0.5, 99.5) percentiles for 16-bit stacks, no windowing (0..255 as is) for 8-bit ones.
    window_percentiles: tuple[float, float] | None = None
    reduced_resolution: bool = True
    skip_bad: bool = False
    export_png: bool = False

    def validate(self) -> None:
        if self.size < 8:
            raise HeartjobsError(f"prepare: --size must be >= 8, got {self.size}")
        if self.every < 1:
            raise HeartjobsError(f"prepare: --every must be >= 1, got {self.every}")
        if self.window not in WINDOW_MODES:
            raise HeartjobsError(f"prepare: --window must be one of {', '.join(WINDOW_MODES)}, got {self.window!r}")
        if self.window == "full" and self.window_percentiles is not None:
            raise HeartjobsError("prepare: --window full maps the whole range; it takes no --window-percentiles")
        if self.window_percentiles is not None:
            lo, hi = self.window_percentiles
            if not 0 <= lo < hi <= 100:
                raise HeartjobsError(f"prepare: --window-percentiles must satisfy 0 <= LO < HI <= 100, got {lo} {hi}")


# --- worker tasks: module-level so spawned processes can import them; errors come back as values ---


def _probe_task(path: Path) -> SliceInfo | str:
    try:
        return slices.probe(path)
    except HeartjobsError as exc:
        return str(exc)


def _decode_task(
    item: tuple[Path, SliceInfo], size: int, reduced: bool, window: Window | None
) -> tuple[np.ndarray, str] | str:
    """(image, sha256 of the file) or an error message; uint8 when a window is given, else float32."""
    path, info = item
    try:
        image = slices.decode(path, size, reduced=reduced, info=info)
    except HeartjobsError as exc:
        return str(exc)
    if window is None:
        return image, ""
    return window.apply(image), sha256_file(path)


def _request_key(files: list[Path], params: PrepareParams) -> str:
    """What the output depends on: each source's name, size and mtime, and the parameters."""
    stats = [(p.name, st.st_size, st.st_mtime_ns) for p in files for st in (p.stat(),)]
    key_params = asdict(params)
    if params.window == "percentiles":  # the default: sets made before --window existed are still found
        del key_params["window"]
    return sha256_json({"format": FORMAT_VERSION, "sources": stats, "params": key_params})


def _check_uniform(files: list[Path], infos: list[SliceInfo]) -> None:
    first = infos[0]
    for path, info in zip(files, infos, strict=True):
        if (info.height, info.width) != (first.height, first.width):
            raise HeartjobsError(
                f"{path}: mixed shapes: {info.height}x{info.width}, but {files[0].name} is {first.height}x{first.width}"
            )
        if info.bits != first.bits:
            raise HeartjobsError(f"{path}: mixed bit depths: {info.bits}-bit, but {files[0].name} is {first.bits}-bit")


class _BadSlices:
    """A bad slice stops the run, or with --skip-bad is left out and listed in the manifest."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.entries: list[dict] = []

    def reject(self, path: Path, message: str) -> None:
        if not self.skip:
            raise HeartjobsError(message)
        if all(entry["name"] != path.name for entry in self.entries):  # the sample pass may have seen it
            self.entries.append({"name": path.name, "error": message})

    def keep_good(self, paths: list[Path], items: list, results: Iterable) -> tuple[list, list]:
        """The items whose results are not error messages, with their results; the others rejected."""
        good_items, good_results = [], []
        for path, item, result in zip(paths, items, results, strict=True):
            if isinstance(result, str):
                self.reject(path, result)
            else:
                good_items.append(item)
                good_results.append(result)
        return good_items, good_results


def prepare(
    src: Path,
    out: Path,
    params: PrepareParams = PrepareParams(),
    *,
    workers: int | None = None,
    force: bool = False,
) -> tuple[dict, bool]:
    """Build the training set in `out` from the slices in `src`; returns (manifest, made_now)."""
    params.validate()
    src, out = Path(src), Path(out)
    files = slices.list_slices(src)[:: params.every]
    key = _request_key(files, params)
    existing = finished_request(out, key, force)
    if existing is not None:
        return existing, False
    bad = _BadSlices(params.skip_bad)
    workers = worker_count(workers, len(files))
    with ordered_map(workers, chunksize=4) as pmap, atomic.staged_dir(out, replace=force) as tmp:
        items = _probe(src, files, params, pmap, bad)
        window, percentiles = _window(src, items, params, pmap, bad)
        images, sources = _decode_all(src, out, tmp / IMAGES_FILE, items, window, params, pmap, bad)
        manifest = _manifest(src, key, params, items[0][1], window, percentiles, images, sources, bad.entries)
        write_views(tmp, images, params, manifest)
        del images
        atomic.write_json(tmp / MANIFEST_FILE, manifest)
    return manifest, True


def finished_request(out: Path, key: str, force: bool) -> dict | None:
    """The manifest of the set already in `out` if it was made from the same request; None where there is
    none, or with `force` where another one is there (it will be replaced); refused otherwise."""
    if not out.exists():
        return None
    existing = read_manifest(out)
    if existing and existing.get("kind") == MANIFEST_KIND and existing.get("request_key") == key:
        return existing
    if not force:
        raise HeartjobsError(f"{out}: exists with other sources or parameters; pass --force to replace it")
    return None


def _probe(src: Path, files: list[Path], params: PrepareParams, pmap, bad: _BadSlices) -> list[tuple[Path, SliceInfo]]:
    """Pass 1: every slice's header; the shapes and bit depths must agree and be large enough."""
    files, infos = bad.keep_good(files, files, pmap(_probe_task, files))
    if not files:
        raise HeartjobsError(f"{src}: no readable slices")
    _check_uniform(files, infos)
    if infos[0].side < params.size:
        raise HeartjobsError(
            f"{files[0]}: slices are {infos[0].height}x{infos[0].width}, smaller than --size {params.size}"
        )
    return list(zip(files, infos, strict=True))


def _window(
    src: Path, items: list[tuple[Path, SliceInfo]], params: PrepareParams, pmap, bad: _BadSlices
) -> tuple[Window, tuple[float, float] | None]:
    """Pass 2: one intensity window for the whole stack, from the percentiles of a sample of slices
    (16-bit data; 8-bit data is kept as is unless percentiles are asked for), or with --window full the
    source's whole range (no sample needed); (window, percentiles)."""
    if params.window == "full":  # 0 .. 2^bits - 1 onto 0 .. 255: value / 257 for 16 bits, as is for 8
        return Window(0.0, float(2 ** items[0][1].bits - 1)), None
    percentiles = params.window_percentiles
    if percentiles is None and items[0][1].bits > 8:
        percentiles = DEFAULT_PERCENTILES
    if percentiles is None:
        return Window(0.0, 255.0), None
    picks = np.unique(np.linspace(0, len(items) - 1, min(WINDOW_SAMPLE, len(items))).round().astype(int))
    sample_items = [items[i] for i in picks]
    decode_float = partial(_decode_task, size=params.size, reduced=params.reduced_resolution, window=None)
    _, sample = bad.keep_good([path for path, _ in sample_items], sample_items, pmap(decode_float, sample_items))
    if not sample:
        raise HeartjobsError(f"{src}: no readable slices")
    return Window.from_percentiles([image for image, _ in sample], *percentiles), percentiles


def _decode_all(
    src: Path,
    out: Path,
    path: Path,
    items: list[tuple[Path, SliceInfo]],
    window: Window,
    params: PrepareParams,
    pmap,
    bad: _BadSlices,
) -> tuple[np.ndarray, list[dict]]:
    """Pass 3: every slice through the window into images.npy at `path` (in the staged copy of `out`);
    (the images, each source's name, size and sha256)."""
    decode_u8 = partial(_decode_task, size=params.size, reduced=params.reduced_resolution, window=window)
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=IMAGES_DTYPE, shape=(len(items), params.size, params.size)
    )
    sources: list[dict] = []
    with track(f"prepare {out}", len(items)) as advance:
        for (source, _), result in zip(items, pmap(decode_u8, items), strict=True):
            advance()
            if isinstance(result, str):
                bad.reject(source, result)
                continue
            image, digest = result
            images[len(sources)] = image
            sources.append({"name": source.name, "bytes": source.stat().st_size, "sha256": digest})
    if not sources:
        raise HeartjobsError(f"{src}: no readable slices")
    images.flush()
    if len(sources) < len(items):  # slices skipped while decoding: shrink the file to the good ones
        kept = np.array(images[: len(sources)])
        del images
        np.save(path, kept)
        return kept, sources
    return np.asarray(images), sources


def _manifest(
    src: Path,
    key: str,
    params: PrepareParams,
    info: SliceInfo,
    window: Window,
    percentiles: tuple[float, float] | None,
    images: np.ndarray,
    sources: list[dict],
    skipped: list[dict],
) -> dict:
    """Pass 4: what the set is and how it was made (`info`: the sources' common header)."""
    return {
        "kind": MANIFEST_KIND,
        "heartjobs_version": __version__,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(src.resolve()),
        "request_key": key,
        "parameters": asdict(params),
        "window": _window_record(info, window, percentiles),
        "source_shape": [info.height, info.width],
        "count": len(sources),
        "shape": [len(sources), 1, params.size, params.size],
        "dtype": np.dtype(IMAGES_DTYPE).name,
        "images": IMAGES_FILE,
        "content_hash": sha256_array(images),
        "sources": sources,
        "skipped": skipped,
        # a phantom's kind and seed, so that what trains on the set (env.json) and its report can say so
        **({"phantom": phantom} if (phantom := phantom_of(src)) else {}),
    }


def _window_record(info: SliceInfo, window: Window, percentiles: tuple[float, float] | None) -> dict:
    """The manifest's "window": how the sources became 8 bits ("mode": percentiles, full, or none for
    8-bit data kept as is), and for deeper sources that this conversion is an assumption, not the thesis'."""
    mode = "percentiles" if percentiles is not None else "full" if info.bits > 8 else "none"
    return {
        "mode": mode,
        "percentiles": list(percentiles) if percentiles else None,
        "low": window.low,
        "high": window.high,
        "source_bits": info.bits,
        "assumption": WINDOW_ASSUMPTION.format(bits=info.bits) if info.bits > 8 else None,
    }


def write_views(folder: Path, images: np.ndarray, params: PrepareParams, manifest: dict) -> None:
    """What a person looks at: the contact sheet, and with --export-png the 8-bit PNGs."""
    from heartjobs.grids import save_grid
    from heartjobs.imaging import save_pngs

    if params.export_png:
        # the 8-bit PNGs the thesis trained on (and pytorch-fid's CLI reads), one per slice in set order
        save_pngs(images, folder / PNG_FOLDER)
        manifest["png"] = PNG_FOLDER
    picks = np.linspace(0, len(images) - 1, min(16, len(images))).round().astype(int)
    save_grid(images[picks], folder / CONTACT_SHEET, nrow=4)
