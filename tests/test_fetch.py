"""Fetching a Human Organ Atlas volume into a prepared set (heartjobs.data.hoa.volume and .fetch), on a tiny
fixture volume (tests/hoa_fixture.py) written as N5, OME-Zarr v2 and v3 and read from a folder, a file://
URL and a real HTTP server on 127.0.0.1, without mocking the reader:

- the prepared images equal an independent computation from the fixture's level arrays (the fixture's own
  2x2x2 mean pyramid, the 0.5/99.5 percentile window or the dataset's contrast limits, `data prepare`'s
  crop and area resize), at every level, with unequal x/y/z sizes so a transpose shows;
- over HTTP, a 503 (or 429) on every path's first request, a stalled response and a connection cut
  mid-body are retried and give the same set;
- a fetch SIGKILLed after k slabs, run again, requests only the blocks of the missing slabs (counted by the
  server) and ends with the same content_hash; a finished set is not fetched again;
- a corrupt block (bad header, wrong size, codec error) is a one-line HeartjobsError naming its key, level
  and block, with the finished slabs kept and only the rest read on the next run;
- a block the store lacks is zeros, said in a warning line and in the manifest;
- the dry run's level table and compressed-size estimate match the fixture's files;
- `heartjobs data fetch` by the thesis heart's name, from a mirror that keeps the bucket's paths.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from math import ceil
from pathlib import Path

import numpy as np
import pytest

from heartjobs.data.hoa.fetch import JOURNAL, FetchParams, estimate_compressed, fetch, level_table, plan
from heartjobs.data.hoa.inventory import THESIS_DATASET, Dataset, find
from heartjobs.data.hoa.volume import open_volume
from heartjobs.data.slices import Window, area_resize, center_crop
from heartjobs.errors import HeartjobsError
from heartjobs.store.prepared import PreparedSet
from tests.conftest import cli, wait_for
from tests.hoa_fixture import (
    SHAPE_ZYX,
    Faults,
    n5_block_key,
    position_volume,
    serve,
    write_n5,
    write_zarr,
)

LAYOUTS = {"n5": "FIX-1/heart/n5/", "zarr2": "FIX-1/heart/zarr2/", "zarr3": "FIX-1/heart/zarr3/"}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A mirror folder holding the fixture volume in all three layouts; (its root, the level arrays)."""
    root = tmp_path_factory.mktemp("hoa-mirror")
    volume = position_volume()
    arrays = write_n5(root / LAYOUTS["n5"], volume)
    for version in (2, 3):
        assert all(
            np.array_equal(a, b)
            for a, b in zip(arrays, write_zarr(root / LAYOUTS[f"zarr{version}"], volume, version), strict=True)
        )
    return root, arrays


def dataset(layout: str = "n5", contrast_limits: tuple[int, int] | None = None) -> Dataset:
    return Dataset(
        name=f"FIX-1_heart_{layout}",
        organ="heart",
        voi="complete-organ",
        shape_xyz=SHAPE_ZYX[::-1],
        voxel_size_um=25.08,
        store_format="n5" if layout == "n5" else "zarr",
        bucket="fixture-bucket",
        path=LAYOUTS[layout],
        donor={"id": "FIX-1", "age": 90, "sex": "F"},
        scan={"date": "2020-07-11", "beamline": "BM05"},
        doi="10.0000/fixture",
        citation="A fixture heart. The heartjobs tests.",
        contrast_limits=contrast_limits,
    )


def float_image(slice_yx: np.ndarray, size: int) -> np.ndarray:
    return area_resize(center_crop(slice_yx.astype(np.float32)), size)


def expected_images(arrays, level, size, picks, limits=None, span=None) -> np.ndarray:
    """The prepared images computed from the fixture's arrays: the window from the dataset's limits, or the
    0.5/99.5 percentiles of up to 32 slices spread over the chosen range `span` (A:B of `level`, default all)
    in the coarsest level at least min(size, 256) px wide (not finer than `level`), resized as the images
    are; then each chosen slice cropped, resized and windowed."""
    if limits is None:
        sides = [min(a.shape[1:]) for a in arrays]
        sample = max(i for i in range(level, len(arrays)) if sides[i] >= min(size, 256))
        ratio = 2 ** (sample - level)
        first, stop = span or (0, len(arrays[level]))
        lo, hi = first // ratio, min(ceil(stop / ratio), len(arrays[sample]))
        chosen = sorted({int(i) for i in np.linspace(lo, hi - 1, min(32, hi - lo)).round()})
        pixels = np.concatenate([float_image(arrays[sample][z], min(size, sides[sample])).ravel() for z in chosen])
        limits = np.percentile(pixels, [0.5, 99.5])
    window = Window(float(limits[0]), float(limits[1]))
    return np.stack([window.apply(float_image(arrays[level][z], size)) for z in picks])


def source_for(root: Path, kind: str) -> str:
    return {"folder": str(root), "file": root.as_uri()}[kind]


@pytest.mark.parametrize(
    ("layout", "via", "level", "size", "slices", "every"),
    [
        ("n5", "folder", 0, 16, None, 1),
        ("n5", "folder", 1, None, (3, 17), 2),
        ("n5", "folder", 2, 5, None, 1),
        ("n5", "folder", 3, None, None, 1),
        ("n5", "folder", 4, None, None, 1),
        ("zarr2", "file", 0, 20, (5, 30), 3),
        ("zarr2", "file", 2, None, None, 1),
        ("zarr3", "folder", 1, 10, None, 1),
        ("zarr3", "file", 3, 2, None, 1),
    ],
)
def test_prepared_images_equal_an_independent_computation(mirror, tmp_path, layout, via, level, size, slices, every):
    root, arrays = mirror
    params = FetchParams(level=level, size=size, slices=slices, every=every)
    out = fetch(dataset(layout), source_for(root, via), tmp_path / "set", params)
    prepared = PreparedSet.open(out)
    side = size or min(arrays[level].shape[1:])
    first, stop = slices or (0, len(arrays[level]))
    picks = list(range(first, stop, every))
    np.testing.assert_array_equal(prepared.images, expected_images(arrays, level, side, picks, span=(first, stop)))
    manifest = prepared.manifest
    provenance = manifest["provenance"]
    assert provenance["level"] == level and provenance["level_shape"] == list(arrays[level].shape)
    assert manifest["source_shape"] == list(arrays[level].shape[1:])  # y, x: a transpose would swap them
    assert provenance["block_size"] == [8, 8, 8] and manifest["window"]["mode"] == "percentiles"
    assert provenance["doi"] == "10.0000/fixture" and provenance["licence"] == "CC BY 4.0"
    covers = [s["full_resolution_slices"] for s in manifest["sources"]]
    assert covers == [[z * 2**level, min((z + 1) * 2**level, SHAPE_ZYX[0])] for z in picks]
    assert not Path(f"{out}.partial").exists()


def test_the_size_alone_picks_the_coarsest_level_at_least_that_wide_and_the_dataset_window(mirror, tmp_path):
    root, arrays = mirror
    out = fetch(dataset("n5", contrast_limits=(3000, 12000)), str(root), tmp_path / "set", FetchParams(size=11))
    prepared = PreparedSet.open(out)
    assert prepared.manifest["provenance"]["level"] == 1  # level 1 is 12 px wide, level 2 only 6
    expected = expected_images(arrays, 1, 11, list(range(len(arrays[1]))), limits=(3000, 12000))
    np.testing.assert_array_equal(prepared.images, expected)
    assert prepared.manifest["window"]["mode"] == "dataset"


def test_over_http_503s_a_stalled_response_and_a_cut_connection_are_retried(mirror, tmp_path):
    root, arrays = mirror
    params = FetchParams(level=1, size=8)
    stalled, cut = "FIX-1/heart/n5/s1/1/1/2", "FIX-1/heart/zarr3/1/c/0/1/1"
    faults = Faults(fail_first=True, stall={stalled}, cut={cut})
    with serve(root, faults) as server:
        made = [
            fetch(dataset(layout, (2000, 14000)), server.url, tmp_path / layout, params) for layout in ("n5", "zarr3")
        ]
    expected = expected_images(arrays, 1, 8, list(range(len(arrays[1]))), limits=(2000, 14000))
    for out in made:
        np.testing.assert_array_equal(PreparedSet.open(out).images, expected)
    assert server.seen[stalled] == 3 and server.seen[cut] == 3  # the 503, the broken answer, the retry
    blocks = [p for p in server.seen if ("/s1/" in p or "/1/" in p) and not p.endswith((".json", ".zarray"))]
    assert len(blocks) == 2 * 12 and all(server.seen[p] == 2 for p in set(blocks) - {stalled, cut})


def test_a_429_too_many_requests_is_retried(mirror):
    root, arrays = mirror
    with serve(root, Faults(fail_first=True, fail_status=429)) as server:
        volume = open_volume(f"{server.url}/{LAYOUTS['n5']}", "n5")
        np.testing.assert_array_equal(volume.read(4, 0, 3), arrays[4])
    assert server.seen["FIX-1/heart/n5/s4/0/0/0"] == 2


FETCH_SCRIPT = """
import sys
from pathlib import Path
from heartjobs.data.hoa.fetch import FetchParams, fetch
from heartjobs.data.hoa.inventory import Dataset
fields = {fields!r}
fetch(Dataset(**fields), sys.argv[1], Path(sys.argv[2]), FetchParams(level=0, size=8))
"""


def journal_slabs(out: Path) -> int:
    path = Path(f"{out}.partial") / JOURNAL
    return path.read_text().count('"kind": "slab"') if path.exists() else 0


def test_a_fetch_killed_after_k_slabs_resumes_with_only_the_missing_blocks_and_the_same_set(mirror, tmp_path):
    root, arrays = mirror
    ds, k = dataset("n5"), 2
    fields = {f: getattr(ds, f) for f in ds.__dataclass_fields__}
    script = textwrap.dedent(FETCH_SCRIPT.format(fields=fields))
    out = tmp_path / "set"

    # Blocks of slab rows >= k wait until the test lets them go: the process is killed with k slabs done.
    def held(path: str) -> bool:
        last = path.rsplit("/", 1)[1]
        return "/s0/" in path and last.isdigit() and int(last) >= k

    with serve(root, Faults(hold=held)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, server.url, str(out)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: journal_slabs(out) >= k, timeout=60, proc=proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert journal_slabs(out) == k and not out.exists()
        server.reset_counts()
        server.faults.hold = lambda path: False
        fetch(ds, server.url, out, FetchParams(level=0, size=8))
        requested = server.block_requests()
        server.reset_counts()
        fetch(ds, server.url, out, FetchParams(level=0, size=8))  # finished: nothing is read again
        assert not server.block_requests()
    grid_y, grid_x = ceil(SHAPE_ZYX[1] / 8), ceil(SHAPE_ZYX[2] / 8)
    missing = {
        f"FIX-1/heart/n5/{n5_block_key(0, (z, y, x))}"
        for z in range(k, 5)
        for y in range(grid_y)
        for x in range(grid_x)
    }
    assert dict(requested) == dict.fromkeys(missing, 1)  # the window came from the journal: no level 1 block
    resumed = PreparedSet.open(out)
    once = PreparedSet.open(fetch(ds, str(root), tmp_path / "once", FetchParams(level=0, size=8)))
    assert resumed.content_hash == once.content_hash
    np.testing.assert_array_equal(resumed.images, expected_images(arrays, 0, 8, list(range(SHAPE_ZYX[0]))))


def n5_header(shape_xyz) -> bytes:
    return b"\x00\x00\x00\x03" + b"".join(int(n).to_bytes(4, "big") for n in shape_xyz)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda good: b"\x00" * 30, id="bad-header"),
        pytest.param(lambda good: n5_header((8, 8, 9)) + good[16:], id="wrong-size"),
        pytest.param(lambda good: good[:16] + b"\x02\x01" + bytes(range(60)), id="codec-error"),
    ],
)
def test_a_corrupt_block_is_one_line_naming_it_and_keeps_the_finished_slabs(mirror, tmp_path, damage):
    root, arrays = mirror
    ds, params, out = dataset("n5"), FetchParams(level=0, size=8), tmp_path / "set"
    key = "FIX-1/heart/n5/" + n5_block_key(0, (3, 1, 2))
    corrupt = Faults(corrupt={key: damage((root / key).read_bytes())})
    with serve(root, corrupt) as server, pytest.raises(HeartjobsError) as caught:
        fetch(ds, server.url, out, params)
    message = str(caught.value)
    assert "\n" not in message and f"{server.url}/{key}: corrupt block (level 0, block z=3 y=1 x=2)" in message
    assert journal_slabs(out) == 3 and not out.exists()  # slabs 0..2 were finished and are kept
    with serve(root) as server:
        fetch(ds, server.url, out, params)
        assert {p.rsplit("/", 1)[1] for p in server.block_requests() if "/s0/" in p} == {"3", "4"}
    np.testing.assert_array_equal(PreparedSet.open(out).images, expected_images(arrays, 0, 8, list(range(37))))


def test_a_missing_block_is_zeros_and_said(mirror, tmp_path, capsys):
    root, arrays = mirror
    copy = tmp_path / "mirror"
    shutil.copytree(root / LAYOUTS["n5"], copy / LAYOUTS["n5"])
    key = n5_block_key(1, (1, 0, 1))
    (copy / LAYOUTS["n5"] / key).unlink()
    out = fetch(dataset("n5", contrast_limits=(2000, 14000)), str(copy), tmp_path / "set", FetchParams(level=1))
    prepared = PreparedSet.open(out)
    assert prepared.manifest["provenance"]["missing_blocks"] == [key]
    assert f"{key}" in capsys.readouterr().err
    holed = arrays[1].copy()
    holed[8:16, 0:8, 8:16] = 0
    expected = expected_images([*arrays[:1], holed, *arrays[2:]], 1, 12, list(range(19)), limits=(2000, 14000))
    np.testing.assert_array_equal(prepared.images, expected)


def test_the_dry_run_sizes_match_the_fixture(mirror):
    root, arrays = mirror
    volume = open_volume(str(root / LAYOUTS["n5"]), "n5")
    table = level_table(dataset("n5"), volume)
    assert [(t["slices"], t["height"], t["width"]) for t in table] == [a.shape for a in arrays]
    assert [t["raw_bytes"] for t in table] == [a.size * 2 for a in arrays]
    assert [t["blocks"] for t in table] == [int(np.prod([ceil(n / 8) for n in a.shape])) for a in arrays]
    # every block sampled: the estimate is the stored bytes of the block files over what they decode to
    files = [p for p in (root / LAYOUTS["n5"] / "s0").rglob("*") if p.is_file() and p.name != "attributes.json"]
    stored = sum(p.stat().st_size for p in files)
    assert estimate_compressed(volume, 0, samples=table[0]["blocks"]) == pytest.approx(stored / arrays[0].size / 2)
    fetch_plan = plan(dataset("n5"), volume, FetchParams(level=1, slices=(3, 12), every=4))
    assert fetch_plan.picks == (3, 7, 11) and fetch_plan.slabs == ((0, 8), (8, 16))
    assert fetch_plan.blocks == 2 * 2 * 2 and fetch_plan.bytes_to_read == 16 * 15 * 12 * 2


def test_data_fetch_reads_the_thesis_heart_from_a_mirror_that_keeps_the_buckets_paths(tmp_path):
    """The command as a user types it: the thesis' record by name, a mirror on 127.0.0.1 holding the fixture
    volume where the bucket holds the heart; --dry-run's table, the fetch, data info's provenance."""
    thesis = find(THESIS_DATASET)
    arrays = write_n5(tmp_path / "mirror" / thesis.path, position_volume())
    with serve(tmp_path / "mirror") as server:
        dry = cli("data", "fetch", THESIS_DATASET, "--source", server.url, "--size", 8, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"{THESIS_DATASET} at {server.url}/{thesis.path}" in dry.stdout
        assert "this fetch: level 1, " in dry.stdout and not (tmp_path / "set").exists()
        out = tmp_path / "set"
        done = cli("data", "fetch", THESIS_DATASET, "--source", server.url, "--size", 8, "--out", out)
    assert done.returncode == 0, done.stderr
    prepared = PreparedSet.open(out)
    assert prepared.count == arrays[1].shape[0] and prepared.size == 8
    assert prepared.manifest["provenance"]["source"] == server.url and f"cite doi:{thesis.doi}" in done.stdout
    info = cli("data", "info", out)
    assert info.returncode == 0 and THESIS_DATASET in info.stdout and "CC BY 4.0" in info.stdout


def test_data_fetch_out_here_level_alone_and_keep_slices_as_a_user_types_them(tmp_path):
    thesis = find(THESIS_DATASET)
    arrays = write_n5(tmp_path / "mirror" / thesis.path, position_volume())
    here = tmp_path / "here"
    here.mkdir()
    base = ("data", "fetch", THESIS_DATASET, "--source", tmp_path / "mirror")
    refused = cli(*base, "--size", 8, "--out", ".", cwd=here)  # no traceback: the current folder is refused
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "the current folder" in refused.stderr and not any(here.iterdir())
    alone = cli(*base, "--level", 2, "--out", tmp_path / "level2")  # --level alone: the level's own width
    assert alone.returncode == 0, alone.stderr
    assert PreparedSet.open(tmp_path / "level2").size == min(arrays[2].shape[1:])
    with_png = cli(*base, "--level", 2, "--keep-slices", "--out", tmp_path / "level2")  # another request
    assert with_png.returncode == 2 and "--force" in with_png.stderr, with_png.stderr
    assert cli(*base, "--level", 2, "--keep-slices", "--force", "--out", tmp_path / "level2").returncode == 0
    assert len(list((tmp_path / "level2" / "png").glob("*.png"))) == arrays[2].shape[0]
    (tmp_path / "mirror").rename(tmp_path / "moved")  # offline now: the same command needs no source
    again = cli(*base, "--level", 2, "--keep-slices", "--out", tmp_path / "level2")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr
