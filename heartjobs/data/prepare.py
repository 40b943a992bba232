"""Turn a folder of CT slices into one training set: images.npy (N x size x size uint8) + manifest.json.

Three passes over the sources, each in a process pool: read the headers (shapes must agree), decode a
sample to fix one intensity window for the whole stack, then decode every slice through that window.
The set is built in a temporary folder and renamed into place, so a failure leaves nothing behind;
the same sources and parameters find the finished set and return at once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from heartjobs import __version__, atomic
from heartjobs.data import slices
from heartjobs.data.slices import SliceInfo, Window
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_array, sha256_file, sha256_json
from heartjobs.progress import track

MANIFEST_KIND = "heartjobs-prepared"
# Bump when the way images are computed changes, so old sets are not mistaken for current ones.
FORMAT_VERSION = 1
IMAGES_FILE = "images.npy"
WINDOW_SAMPLE = 32
DEFAULT_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class PrepareParams:
    size: int = 256
    every: int = 1
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


@contextmanager
def _mapper(workers: int) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """An ordered map: inline for one worker, else over a pool of spawned processes."""
    if workers <= 1:
        yield map
        return
    pool: Executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    with pool:
        yield lambda fn, items: pool.map(fn, items, chunksize=4)


def _request_key(files: list[Path], params: PrepareParams) -> str:
    """What the output depends on: each source's name, size and mtime, and the parameters."""
    stats = [(p.name, st.st_size, st.st_mtime_ns) for p in files for st in (p.stat(),)]
    return sha256_json({"format": FORMAT_VERSION, "sources": stats, "params": asdict(params)})


def read_manifest(out: Path) -> dict | None:
    """A set's manifest.json, or None where there is none (or it is not valid JSON)."""
    return atomic.read_json(Path(out) / "manifest.json") or None


def _check_uniform(files: list[Path], infos: list[SliceInfo]) -> None:
    first = infos[0]
    for path, info in zip(files, infos, strict=True):
        if (info.height, info.width) != (first.height, first.width):
            raise HeartjobsError(
                f"{path}: mixed shapes: {info.height}x{info.width}, but {files[0].name} is {first.height}x{first.width}"
            )
        if info.bits != first.bits:
            raise HeartjobsError(f"{path}: mixed bit depths: {info.bits}-bit, but {files[0].name} is {first.bits}-bit")


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
    if out.exists():
        existing = read_manifest(out)
        if existing and existing.get("kind") == MANIFEST_KIND and existing.get("request_key") == key:
            return existing, False
        if not force:
            raise HeartjobsError(f"{out}: exists with other sources or parameters; pass --force to replace it")
    workers = max(1, min(workers or os.cpu_count() or 1, len(files)))

    skipped: list[dict] = []

    def reject(path: Path, message: str) -> None:
        """A bad slice stops the run, or with --skip-bad is left out and listed in the manifest."""
        if not params.skip_bad:
            raise HeartjobsError(message)
        if all(entry["name"] != path.name for entry in skipped):  # the sample pass may have seen it
            skipped.append({"name": path.name, "error": message})

    def keep_good(paths: list[Path], items: list, results: Iterable) -> tuple[list, list]:
        good_items, good_results = [], []
        for path, item, result in zip(paths, items, results, strict=True):
            if isinstance(result, str):
                reject(path, result)
            else:
                good_items.append(item)
                good_results.append(result)
        return good_items, good_results

    with _mapper(workers) as pmap, atomic.staged_dir(out, replace=force) as tmp:
        files, infos = keep_good(files, files, pmap(_probe_task, files))
        if not files:
            raise HeartjobsError(f"{src}: no readable slices")
        _check_uniform(files, infos)
        if infos[0].side < params.size:
            raise HeartjobsError(
                f"{files[0]}: slices are {infos[0].height}x{infos[0].width}, smaller than --size {params.size}"
            )
        items = list(zip(files, infos, strict=True))

        percentiles = params.window_percentiles
        if percentiles is None and infos[0].bits > 8:
            percentiles = DEFAULT_PERCENTILES
        if percentiles is None:
            window = Window(0.0, 255.0)
        else:
            picks = np.unique(np.linspace(0, len(items) - 1, min(WINDOW_SAMPLE, len(items))).round().astype(int))
            sample_items = [items[i] for i in picks]
            decode_float = partial(_decode_task, size=params.size, reduced=params.reduced_resolution, window=None)
            _, sample = keep_good([files[i] for i in picks], sample_items, pmap(decode_float, sample_items))
            if not sample:
                raise HeartjobsError(f"{src}: no readable slices")
            window = Window.from_percentiles([image for image, _ in sample], *percentiles)

        decode_u8 = partial(_decode_task, size=params.size, reduced=params.reduced_resolution, window=window)
        images = np.lib.format.open_memmap(
            tmp / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(len(items), params.size, params.size)
        )
        sources: list[dict] = []
        with track(f"prepare {out}", len(items)) as advance:
            for (path, _), result in zip(items, pmap(decode_u8, items), strict=True):
                advance()
                if isinstance(result, str):
                    reject(path, result)
                    continue
                image, digest = result
                images[len(sources)] = image
                sources.append({"name": path.name, "bytes": path.stat().st_size, "sha256": digest})
        if not sources:
            raise HeartjobsError(f"{src}: no readable slices")
        images.flush()
        if len(sources) < len(items):  # slices skipped while decoding: shrink the file to the good ones
            kept = np.array(images[: len(sources)])
            del images
            np.save(tmp / IMAGES_FILE, kept)
            images = kept

        manifest = {
            "kind": MANIFEST_KIND,
            "heartjobs_version": __version__,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": str(src.resolve()),
            "request_key": key,
            "parameters": asdict(params),
            "window": {
                "percentiles": list(percentiles) if percentiles else None,
                "low": window.low,
                "high": window.high,
                "source_bits": infos[0].bits,
            },
            "source_shape": [infos[0].height, infos[0].width],
            "count": len(sources),
            "shape": [len(sources), 1, params.size, params.size],
            "dtype": "uint8",
            "images": IMAGES_FILE,
            "content_hash": sha256_array(np.asarray(images)),
            "sources": sources,
            "skipped": skipped,
        }
        if params.export_png:
            _export_png(np.asarray(images), tmp / "png")
            manifest["png"] = "png"
        picks = np.linspace(0, len(sources) - 1, min(16, len(sources))).round().astype(int)
        from heartjobs.grids import save_grid

        save_grid(np.asarray(images)[picks], tmp / "contact_sheet.png", nrow=4)
        del images
        atomic.write_json(tmp / "manifest.json", manifest)
    return manifest, True


def _export_png(images: np.ndarray, folder: Path) -> None:
    """The 8-bit PNGs the thesis trained on (and pytorch-fid's CLI reads), one per slice in set order."""
    from PIL import Image

    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
