"""Fetch one level of a Human Organ Atlas volume into a prepared set, resumably: plan (which level, slices
and slabs), the dry run's level table and compressed-size estimate, and the fetch itself.

The fetch works in slabs: the block rows along z (one block deep) that hold the chosen slices. Each slab
is read block by block (volume.py), each chosen slice in it center-cropped, area-resized and windowed to
8 bits exactly as `data prepare` does (heartjobs.data.slices), and the slab's images written atomically to
`<out>.partial/` and recorded with their sha256 in a journal there. A fetch that was killed or lost the
network resumes from the journal: finished slabs (checksums verified) are not read again, and the window,
computed once before the first slab, is taken from the journal, so the set comes out byte-identical.
Memory: one slab being processed and the next one being read.

The 16 -> 8 bit window: the dataset's published contrast limits where the record has them and `--window
dataset` (the default) asks for them; otherwise the 0.5 / 99.5 percentiles of a sample of up to 32
slices spread over the chosen range, read from the coarsest level at least min(size, 256) px wide (never a
finer level than the one fetched), each cropped and resized as the images are. Either way it is heartjobs'
assumption, and the manifest says which.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from math import ceil
from pathlib import Path
from typing import Literal

import numpy as np
from rich.text import Text

from heartjobs import __version__, atomic
from heartjobs.data.hoa.inventory import Dataset, dataset_url
from heartjobs.data.hoa.volume import Level, Volume, open_volume
from heartjobs.data.prepare import DEFAULT_PERCENTILES, WINDOW_SAMPLE, PrepareParams, finished_request, write_views
from heartjobs.data.slices import Window, area_resize, center_crop
from heartjobs.errors import HeartjobsError, printable
from heartjobs.hashing import sha256_array, sha256_file, sha256_json
from heartjobs.progress import console, track
from heartjobs.store.prepared import (
    FORMAT_VERSION,
    IMAGES_DTYPE,
    IMAGES_FILE,
    MANIFEST_FILE,
    MANIFEST_KIND,
    read_manifest,
)

WINDOW_MODES = ("dataset", "percentiles")
# The percentile sample is read from the coarsest level at least this wide (or the output size, if smaller).
WINDOW_SAMPLE_SIDE = 256
JOURNAL = "journal.jsonl"
WINDOW_ASSUMPTION = (
    "16 -> 8 bit conversion: the thesis does not say how it converted; this is heartjobs' choice (--window "
    "dataset: the dataset's published contrast limits where it has them; otherwise the 0.5/99.5 percentiles "
    "of a sample of the chosen slices)"
)


@dataclass(frozen=True)
class FetchParams:
    level: int | None = None
    # The images' side in px; the level is the coarsest at least that wide unless `level` is given. None with a
    # level: the level's own side (center-cropped, not resized).
    size: int | None = None
    slices: tuple[int, int] | None = None  # A:B in the level's slice numbers (B exclusive)
    every: int = 1
    window: Literal["dataset", "percentiles"] = "dataset"
    keep_slices: bool = False  # also the 8-bit PNGs, one per image, in png/ (as `data prepare --export-png`)
    force: bool = False


@dataclass(frozen=True)
class FetchPlan:
    level: Level
    slices: tuple[int, int]  # A:B of the level's slices
    every: int
    picks: tuple[int, ...]  # the level's slices that become images
    slabs: tuple[tuple[int, int], ...]  # (z0, z1): the block rows read, each one block deep
    size: int  # the images' side, px
    blocks: int  # blocks to read
    bytes_to_read: int  # their raw (decoded) bytes

    def slab_picks(self, slab: tuple[int, int]) -> list[int]:
        return [z for z in self.picks if slab[0] <= z < slab[1]]


def _side(level: Level) -> int:
    return min(level.shape_zyx[1:])


def plan(dataset: Dataset, volume: Volume, params: FetchParams) -> FetchPlan:
    """What a fetch with `params` reads and makes; one-line errors naming the parameter otherwise."""
    levels = volume.levels
    if params.level is not None:
        if not 0 <= params.level < len(levels):
            raise HeartjobsError(f"{dataset.name}: --level {params.level}: the levels are 0..{len(levels) - 1}")
        level = levels[params.level]
    elif params.size is not None:
        wide_enough = [lv for lv in levels if _side(lv) >= params.size]
        if not wide_enough:
            raise HeartjobsError(f"{dataset.name}: --size {params.size}: wider than level 0 ({_side(levels[0])} px)")
        level = wide_enough[-1]
    else:
        raise HeartjobsError(f"{dataset.name}: give --level or --size")
    size = params.size if params.size is not None else _side(level)
    if not 1 <= size <= _side(level):
        raise HeartjobsError(f"{dataset.name}: --size {size}: level {level.index} is {_side(level)} px wide")
    if params.every < 1:
        raise HeartjobsError(f"{dataset.name}: --every must be >= 1, got {params.every}")
    depth = level.shape_zyx[0]
    first, stop = params.slices if params.slices is not None else (0, depth)
    if not 0 <= first < stop <= depth:
        raise HeartjobsError(f"{dataset.name}: --slices {first}:{stop}: level {level.index} has slices 0:{depth}")
    picks = tuple(range(first, stop, params.every))
    bz = level.block_zyx[0]
    rows = sorted({z // bz for z in picks})
    slabs = tuple((r * bz, min((r + 1) * bz, depth)) for r in rows)
    per_row = level.grid_zyx[1] * level.grid_zyx[2]
    slice_bytes = level.shape_zyx[1] * level.shape_zyx[2] * np.dtype(level.dtype).itemsize
    return FetchPlan(
        level=level,
        slices=(first, stop),
        every=params.every,
        picks=picks,
        slabs=slabs,
        size=size,
        blocks=len(slabs) * per_row,
        bytes_to_read=sum(z1 - z0 for z0, z1 in slabs) * slice_bytes,
    )


def level_table(dataset: Dataset, volume: Volume) -> list[dict]:
    """Per level: its index, slices, height and width (px), raw bytes, blocks, block shape, factor."""
    return [
        {
            "level": lv.index,
            "slices": lv.shape_zyx[0],
            "height": lv.shape_zyx[1],
            "width": lv.shape_zyx[2],
            "raw_bytes": lv.raw_bytes,
            "blocks": lv.block_count,
            "block": list(lv.block_zyx),
            "factor": lv.factor,
        }
        for lv in volume.levels
    ]


def estimate_compressed(volume: Volume, level: int, samples: int = 8) -> float | None:
    """Stored / raw bytes over up to `samples` blocks spread over `level`; None where none is stored."""
    sizes = volume.sample_block_bytes(level, samples)
    raw = sum(r for _, r in sizes)
    return sum(s for s, _ in sizes) / raw if raw else None


# --- the window ---


def _window(dataset: Dataset, volume: Volume, fetch_plan: FetchPlan, params: FetchParams) -> dict:
    """The journal's and manifest's "window": mode, low, high, and for percentiles the sample it came from."""
    limits = dataset.contrast_limits
    bits = np.dtype(fetch_plan.level.dtype).itemsize * 8
    record = {"mode": "", "percentiles": None, "low": 0.0, "high": 0.0, "source_bits": bits}
    record["assumption"] = WINDOW_ASSUMPTION
    if params.window == "dataset" and limits is not None:
        low, high = (float(v) for v in limits)
        return {**record, "mode": "dataset", "low": low, "high": high}
    sample_level, images = _window_sample(volume, fetch_plan)
    window = Window.from_percentiles(images, *DEFAULT_PERCENTILES)
    return {
        **record,
        "mode": "percentiles",
        "percentiles": list(DEFAULT_PERCENTILES),
        "low": window.low,
        "high": window.high,
        "sample_level": sample_level,
        "sample_slices": len(images),
        "requested": params.window,
    }


def window_sample_level(volume: Volume, fetch_plan: FetchPlan) -> Level:
    """The coarsest level at least min(size, WINDOW_SAMPLE_SIDE) wide, never finer than the one fetched."""
    need = min(fetch_plan.size, WINDOW_SAMPLE_SIDE)
    fine = fetch_plan.level.index
    return [lv for lv in volume.levels[fine:] if _side(lv) >= need][-1]


def window_sample_slices(volume: Volume, fetch_plan: FetchPlan) -> tuple[Level, list[int]]:
    """The sample level and its slices the percentiles come from: up to WINDOW_SAMPLE spread over the
    slices that cover the chosen range."""
    level = window_sample_level(volume, fetch_plan)
    ratio = level.factor // fetch_plan.level.factor
    first, stop = fetch_plan.slices
    lo, hi = first // ratio, min(ceil(stop / ratio), level.shape_zyx[0])
    count = min(WINDOW_SAMPLE, hi - lo)
    return level, sorted({int(i) for i in np.linspace(lo, hi - 1, count).round()})


def _window_sample(volume: Volume, fetch_plan: FetchPlan) -> tuple[int, list[np.ndarray]]:
    level, picks = window_sample_slices(volume, fetch_plan)
    side = min(fetch_plan.size, _side(level))
    images = []
    bz = level.block_zyx[0]
    for row in sorted({z // bz for z in picks}):
        z0, z1 = row * bz, min((row + 1) * bz, level.shape_zyx[0])
        slab = volume.read(level.index, z0, z1)
        images += [_float_image(slab[z - z0], side) for z in picks if z0 <= z < z1]
    return level.index, images


def _float_image(slice_yx: np.ndarray, size: int) -> np.ndarray:
    """One slice as `data prepare` makes it before the window: float32, center-cropped, area-resized."""
    return area_resize(center_crop(slice_yx.astype(np.float32)), size)


# --- the journal ---


def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _read_journal(path: Path) -> list[dict]:
    """The journal's records; a line cut short by a kill (or anything not a JSON object) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = atomic.loads_json(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _resume(partial: Path, key: str, force: bool) -> tuple[dict | None, dict[int, dict]]:
    """The journal's start record (None: start afresh) and its finished slabs whose files still hash to
    what the journal says, by slab index."""
    records = _read_journal(partial / JOURNAL)
    start = next((r for r in records if r.get("kind") == "start"), None)
    if start is not None and start.get("request_key") != key:
        if not force:
            raise HeartjobsError(
                f"{partial}: holds a fetch with other parameters; pass --force to start this one afresh"
            )
        start = None
    if start is None:
        shutil.rmtree(partial, ignore_errors=True)
        return None, {}
    done = {}
    for record in records:
        if record.get("kind") != "slab" or not isinstance(record.get("index"), int):
            continue
        file = partial / str(record.get("file"))
        if file.is_file() and sha256_file(file) == record.get("sha256"):
            done[record["index"]] = record
    return start, done


def _asked(dataset: Dataset, params: FetchParams) -> dict:
    """The request as the user made it (before the store's levels turn it into a plan): what a finished set
    records, so that the same command again needs no source to know it is done."""
    return {"dataset": dataset.name, **{k: v for k, v in asdict(params).items() if k != "force"}}


def asked_before(out: Path, dataset: Dataset, params: FetchParams) -> bool:
    manifest = read_manifest(out) if not params.force else None
    provenance = (manifest or {}).get("provenance")
    asked = json.loads(json.dumps(_asked(dataset, params)))  # tuples as the manifest's JSON lists
    return isinstance(provenance, dict) and manifest.get("kind") == MANIFEST_KIND and provenance.get("asked") == asked


def _request_key(dataset: Dataset, fetch_plan: FetchPlan, params: FetchParams) -> str:
    """What the images depend on (not the source: a faithful mirror gives the same set)."""
    level = fetch_plan.level
    return sha256_json(
        {
            "format": FORMAT_VERSION,
            "kind": "hoa-fetch",
            "dataset": dataset.name,
            "level": level.index,
            "level_shape": list(level.shape_zyx),
            "block": list(level.block_zyx),
            "slices": list(fetch_plan.slices),
            "every": fetch_plan.every,
            "size": fetch_plan.size,
            "window": params.window,
            "contrast_limits": list(dataset.contrast_limits or []) or None,
            "png": params.keep_slices,  # as data prepare's export_png: a set without them is another request
        }
    )


# --- the fetch ---


def fetch(dataset: Dataset, source: str, out: Path, params: FetchParams) -> Path:
    """The prepared set of `dataset` (read from `source`, inventory.resolve_source's answer) at `out`;
    resumes a fetch killed before it finished, and returns at once where `out` holds this set already."""
    out = Path(out)
    atomic.refuse_cwd_or_above(out)  # before anything is named after it (`--out .` has no name)
    if asked_before(out, dataset, params):  # done already: no need to reach the source (offline, say)
        console.print(f"up to date: {out} holds {dataset.name} as asked")
        return out
    url = dataset_url(dataset, source)
    # said first: a source that does not answer is retried for minutes before the error
    console.print(f"reading {printable(url)} (errors are retried for up to about 2.5 minutes per request)")
    volume = open_volume(url, dataset.store_format)
    fetch_plan = plan(dataset, volume, params)
    key = _request_key(dataset, fetch_plan, params)
    partial = _partial_dir(out)
    if finished_request(out, key, params.force) is not None:
        shutil.rmtree(partial, ignore_errors=True)
        return out
    start, done = _resume(partial, key, params.force)
    if start is None:  # the window first, once: a resumed fetch windows its slabs the same way
        start = {"kind": "start", "request_key": key, "window": _window(dataset, volume, fetch_plan, params)}
        partial.mkdir(parents=True, exist_ok=True)
        atomic.append_lines(partial / JOURNAL, [atomic.dumps_json(start)])
    window = Window(start["window"]["low"], start["window"]["high"])
    _fetch_slabs(volume, fetch_plan, window, partial, done)
    _assemble(dataset, source, volume, fetch_plan, params, start, done, partial, out, key)
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _fetch_slabs(volume: Volume, fetch_plan: FetchPlan, window: Window, partial: Path, done: dict) -> None:
    """Every slab not in `done`: read (the next one's blocks requested while this one is processed),
    windowed, written and journalled; `done` gains their records."""
    todo = [(i, slab) for i, slab in enumerate(fetch_plan.slabs) if i not in done]
    level = fetch_plan.level
    per_slab = level.grid_zyx[1] * level.grid_zyx[2]
    with track(f"fetch level {level.index} of {volume.url}", len(todo) * per_slab) as advance:
        pending = volume.start_read(level.index, *todo[0][1]) if todo else None
        for n, (index, slab) in enumerate(todo):
            current = pending
            pending = volume.start_read(level.index, *todo[n + 1][1]) if n + 1 < len(todo) else None
            missing: list[str] = []
            array = current.result(advance=advance, missing=missing)
            if missing:
                _warn_missing(volume, level, slab, missing)
            picks = fetch_plan.slab_picks(slab)
            images = np.stack([window.apply(_float_image(array[z - slab[0]], fetch_plan.size)) for z in picks])
            del array, current
            name = f"slab-{index:06d}.npy"
            with atomic.replacing(partial / name) as tmp, open(tmp, "wb") as f:
                np.save(f, images.astype(IMAGES_DTYPE, copy=False))
            record = {
                "kind": "slab",
                "index": index,
                "z": list(slab),
                "file": name,
                "count": len(picks),
                "sha256": sha256_file(partial / name),
                "missing_blocks": missing,
            }
            atomic.append_lines(partial / JOURNAL, [atomic.dumps_json(record)])
            done[index] = record


def _warn_missing(volume: Volume, level: Level, slab: tuple[int, int], keys: list[str]) -> None:
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    text = (
        f"{volume.url}: {len(keys)} block(s) of level {level.index} slices {slab[0]}:{slab[1]} not stored "
        f"(the store's fill value: zeros): {shown}"
    )
    console.print(Text.assemble(("warning: ", "bold yellow"), printable(text)))


def _assemble(
    dataset: Dataset,
    source: str,
    volume: Volume,
    fetch_plan: FetchPlan,
    params: FetchParams,
    start: dict,
    done: dict,
    partial: Path,
    out: Path,
    key: str,
) -> None:
    """The slabs, in order, into images.npy; the manifest and views beside it; renamed into place."""
    size, level = fetch_plan.size, fetch_plan.level
    prepare_params = PrepareParams(size=size, every=fetch_plan.every, export_png=params.keep_slices)
    with atomic.staged_dir(out, replace=params.force) as tmp:
        images = np.lib.format.open_memmap(
            tmp / IMAGES_FILE, mode="w+", dtype=IMAGES_DTYPE, shape=(len(fetch_plan.picks), size, size)
        )
        at = 0
        for index in range(len(fetch_plan.slabs)):
            part = np.load(partial / done[index]["file"])
            images[at : at + len(part)] = part
            at += len(part)
        images.flush()
        missing = [k for index in sorted(done) for k in done[index].get("missing_blocks", [])]
        manifest = {
            "kind": MANIFEST_KIND,
            "heartjobs_version": __version__,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": volume.url,
            "request_key": key,
            "parameters": {**asdict(params), "size": size, "level": level.index, "slices": list(fetch_plan.slices)},
            "window": start["window"],
            "source_shape": list(level.shape_zyx[1:]),
            "count": len(fetch_plan.picks),
            "shape": [len(fetch_plan.picks), 1, size, size],
            "dtype": np.dtype(IMAGES_DTYPE).name,
            "images": IMAGES_FILE,
            "content_hash": sha256_array(images),
            "sources": [_slice_source(level, volume, z) for z in fetch_plan.picks],
            "skipped": [],
            # where the volume came from and how to cite it (`data info` shows it, env.json carries it)
            "provenance": {
                **dataset.provenance(),
                "level": level.index,
                "level_shape": list(level.shape_zyx),
                "block_size": list(level.block_zyx),
                "source": source,
                "missing_blocks": missing,
                "asked": _asked(dataset, params),
            },
        }
        write_views(tmp, np.asarray(images), prepare_params, manifest)
        del images
        atomic.write_json(tmp / MANIFEST_FILE, manifest)


def _slice_source(level: Level, volume: Volume, z: int) -> dict:
    """One image's source: its slice of the level and the full-resolution slices it covers (A:B, B exclusive)."""
    full = volume.levels[0].shape_zyx[0]
    return {
        "name": f"level {level.index} slice {z}",
        "level_slice": z,
        "full_resolution_slices": [z * level.factor, min((z + 1) * level.factor, full)],
    }
