"""Preparing slices into a training set: real JPEG 2000, PNG and TIFF files through the real pipeline."""

from __future__ import annotations

import json
import shutil

import glymur
import numpy as np
import pytest
import torch
from PIL import Image

from heartjobs.data import slices
from heartjobs.data.needs import needed_sets
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_array, sha256_file
from heartjobs.store.prepared import PreparedSet

from .conftest import SMALL_PHANTOM, cli, write_spec


def _write_pngs(folder, images, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"slice_{i}{suffix}")
    return folder


def _leftovers(parent):
    """Temporary staging folders that a failed run would have left behind."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_phantom_prepares_into_a_uint8_set_with_its_manifest(tmp_path, phantom_dir):
    out = tmp_path / "prepared"
    manifest, made = prepare(phantom_dir, out, PrepareParams(size=32), workers=1)
    assert made
    images = np.load(out / "images.npy")
    assert images.shape == (12, 32, 32) and images.dtype == np.uint8
    assert manifest["shape"] == [12, 1, 32, 32] and manifest["count"] == 12
    assert manifest["content_hash"] == sha256_array(images)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["window"]["percentiles"] == [0.5, 99.5] and manifest["window"]["source_bits"] == 16
    assert [s["name"] for s in manifest["sources"]] == [f"slice_{i:05d}.jp2" for i in range(12)]
    for entry in manifest["sources"][:2]:
        assert entry["sha256"] == sha256_file(phantom_dir / entry["name"])
    # 0.5/99.5 percentiles: the full 8-bit range is used, with little clipping at either end
    assert images.min() == 0 and images.max() == 255
    assert (images == 0).mean() < 0.02 and (images == 255).mean() < 0.02
    assert (out / "contact_sheet.png").is_file()


def test_loader_returns_a_uint8_tensor_n_1_h_w(tmp_path, phantom_dir):
    out = tmp_path / "prepared"
    prepare(phantom_dir, out, PrepareParams(size=32), workers=1)
    tensor = PreparedSet.open(out).tensor()
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (12, 1, 32, 32)
    assert torch.equal(tensor[:, 0], torch.from_numpy(np.load(out / "images.npy")))
    prepared = PreparedSet.open(out)
    assert (prepared.count, prepared.size, prepared.channels) == (12, 32, 1)
    assert prepared.content_hash == prepared.manifest["content_hash"]


def test_loader_refuses_a_folder_that_is_not_a_prepared_set(tmp_path, phantom_dir):
    with pytest.raises(HeartjobsError, match="manifest.json"):
        PreparedSet.open(tmp_path)
    with pytest.raises(HeartjobsError, match="kind"):
        PreparedSet.open(phantom_dir)  # a phantom's manifest, not a prepared set's


def test_parallel_workers_give_the_same_set(tmp_path, phantom_dir):
    one, _ = prepare(phantom_dir, tmp_path / "one", PrepareParams(size=32), workers=1)
    two, _ = prepare(phantom_dir, tmp_path / "two", PrepareParams(size=32), workers=2)
    assert one["content_hash"] == two["content_hash"]


def test_rerun_is_idempotent_and_changed_parameters_need_force(tmp_path, phantom_dir):
    out = tmp_path / "prepared"
    first, made = prepare(phantom_dir, out, PrepareParams(size=32), workers=1)
    stamp = (out / "images.npy").stat().st_mtime_ns
    again, made_again = prepare(phantom_dir, out, PrepareParams(size=32), workers=1)
    assert made and not made_again and again == first
    assert (out / "images.npy").stat().st_mtime_ns == stamp  # nothing decoded or written again
    with pytest.raises(HeartjobsError, match="--force"):
        prepare(phantom_dir, out, PrepareParams(size=16), workers=1)
    replaced, made = prepare(phantom_dir, out, PrepareParams(size=16), workers=1, force=True)
    assert made and replaced["shape"] == [12, 1, 16, 16]
    assert _leftovers(tmp_path) == []


def test_every_k_keeps_every_kth_slice_in_natural_order(tmp_path):
    # slice_0 .. slice_10: natural order puts slice_2 before slice_10
    images = [np.full((16, 16), 20 * i, dtype=np.uint8) for i in range(11)]
    src = _write_pngs(tmp_path / "src", images)
    manifest, _ = prepare(src, tmp_path / "out", PrepareParams(size=16, every=2), workers=1)
    assert [s["name"] for s in manifest["sources"]] == [f"slice_{i}.png" for i in (0, 2, 4, 6, 8, 10)]
    out = np.load(tmp_path / "out" / "images.npy")
    assert out[:, 0, 0].tolist() == [0, 40, 80, 120, 160, 200]  # 8-bit data kept as is


def test_one_window_for_the_whole_stack(tmp_path):
    # 16-bit slices, each of one constant grey: a per-slice window would flatten them all alike.
    values = [1000, 5000, 9000, 21000, 41000]
    images = [np.full((24, 24), v, dtype=np.uint16) for v in values]
    src = _write_pngs(tmp_path / "src", images, suffix=".tif")
    params = PrepareParams(size=24, window_percentiles=(0.0, 100.0))
    manifest, _ = prepare(src, tmp_path / "out", params, workers=1)
    assert manifest["window"]["low"] == 1000 and manifest["window"]["high"] == 41000
    assert manifest["window"]["source_bits"] == 16
    out = np.load(tmp_path / "out" / "images.npy")
    expected = [round((v - 1000) / 40000 * 255) for v in values]
    for image, value in zip(out, expected, strict=True):
        assert np.all(image == value)


def test_window_full_is_value_over_257_of_the_same_decoded_slices(tmp_path, phantom_dir):
    full, _ = prepare(phantom_dir, tmp_path / "full", PrepareParams(size=32, window="full"), workers=1)
    images = np.load(tmp_path / "full" / "images.npy")
    # the phantom's 128 px jp2 slices decode at 1/4 resolution straight to 32 px: whole 16-bit values
    decoded = np.stack([slices.decode(phantom_dir / s["name"], 32) for s in full["sources"]]).astype(np.float64)
    assert decoded.max() > 255  # 16-bit values, not already 8-bit
    np.testing.assert_array_equal(images, np.rint(decoded / 257).astype(np.uint8))
    window = full["window"]
    assert window["mode"] == "full" and (window["low"], window["high"]) == (0, 65535)
    assert window["percentiles"] is None and window["source_bits"] == 16
    assert "thesis does not say" in window["assumption"] and "--window full" in window["assumption"]
    assert full["parameters"]["window"] == "full"

    default, _ = prepare(phantom_dir, tmp_path / "default", PrepareParams(size=32), workers=1)
    assert default["window"]["mode"] == "percentiles" and "thesis does not say" in default["window"]["assumption"]
    assert not np.array_equal(np.load(tmp_path / "default" / "images.npy"), images)


def test_window_modes_are_different_sets_and_each_is_found_again(tmp_path, phantom_dir):
    full_params = PrepareParams(size=32, window="full")
    full, _ = prepare(phantom_dir, tmp_path / "full", full_params, workers=1)
    default, _ = prepare(phantom_dir, tmp_path / "default", PrepareParams(size=32), workers=1)
    assert full["content_hash"] != default["content_hash"]
    assert full["request_key"] != default["request_key"]
    again, made = prepare(phantom_dir, tmp_path / "full", full_params, workers=1)
    assert not made and again == full
    with pytest.raises(HeartjobsError, match="--force"):  # the other mode into the same folder
        prepare(phantom_dir, tmp_path / "full", PrepareParams(size=32), workers=1)


def test_window_none_for_eight_bit_data_with_no_assumption(tmp_path):
    images = [np.full((16, 16), v, dtype=np.uint8) for v in (0, 77, 255)]
    src = _write_pngs(tmp_path / "src", images)
    for mode in ("percentiles", "full"):  # both keep 8-bit data as is
        manifest, _ = prepare(src, tmp_path / mode, PrepareParams(size=16, window=mode), workers=1)
        assert manifest["window"]["mode"] == "none" and manifest["window"]["assumption"] is None
        assert np.load(tmp_path / mode / "images.npy")[:, 0, 0].tolist() == [0, 77, 255]


def test_window_full_with_percentiles_is_a_one_line_error(tmp_path, phantom_dir):
    out = tmp_path / "out"
    result = cli(
        "data",
        "prepare",
        phantom_dir,
        "--out",
        out,
        "--size",
        "32",
        "--window",
        "full",
        "--window-percentiles",
        "1",
        "99",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "--window full" in lines[0] and "--window-percentiles" in lines[0]
    assert not out.exists()


def test_sixteen_bit_png_and_rgb_sources(tmp_path):
    gradient = np.tile(np.linspace(0, 60000, 32).astype(np.uint16), (32, 1))
    src16 = _write_pngs(tmp_path / "png16", [gradient, gradient])
    manifest, _ = prepare(src16, tmp_path / "out16", PrepareParams(size=16), workers=1)
    assert manifest["window"]["source_bits"] == 16
    row = np.load(tmp_path / "out16" / "images.npy")[0, 0]
    assert row[0] < 10 and row[-1] > 245 and np.all(np.diff(row.astype(int)) > 0)

    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    src_rgb = _write_pngs(tmp_path / "rgb", [rgb])
    prepare(src_rgb, tmp_path / "out_rgb", PrepareParams(size=16), workers=1)
    gray = np.load(tmp_path / "out_rgb" / "images.npy")
    assert np.all(gray == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50))  # Pillow's luma


def test_area_resize_averages_blocks(tmp_path):
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 200).astype(np.uint8)  # 0/200 checkerboard
    src = _write_pngs(tmp_path / "src", [checker])
    prepare(src, tmp_path / "out", PrepareParams(size=8), workers=1)
    assert np.all(np.load(tmp_path / "out" / "images.npy") == 100)


def test_center_crop_to_square(tmp_path):
    wide = np.zeros((20, 40), dtype=np.uint8)
    wide[:, 10:30] = 255  # only the middle square is white
    src = _write_pngs(tmp_path / "src", [wide])
    manifest, _ = prepare(src, tmp_path / "out", PrepareParams(size=20), workers=1)
    assert manifest["source_shape"] == [20, 40]
    assert np.all(np.load(tmp_path / "out" / "images.npy") == 255)


@pytest.mark.parametrize("sample", ["nemo", "goodstuff", "jpxfile"])
def test_glymur_sample_files_from_another_encoder_prepare(tmp_path, sample):
    path = getattr(glymur.data, sample)()
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(path, src)
    manifest, _ = prepare(src, tmp_path / "out", PrepareParams(size=64), workers=1)
    images = np.load(tmp_path / "out" / "images.npy")
    assert images.shape == (1, 64, 64) and manifest["window"]["source_bits"] == 8
    assert images.std() > 10


def test_export_png_writes_the_same_images(tmp_path, phantom_dir):
    manifest, _ = prepare(phantom_dir, tmp_path / "out", PrepareParams(size=32, export_png=True), workers=1)
    pngs = sorted((tmp_path / "out" / "png").glob("*.png"))
    assert len(pngs) == 12 and manifest["png"] == "png"
    images = np.load(tmp_path / "out" / "images.npy")
    for i in (0, 11):
        np.testing.assert_array_equal(np.asarray(Image.open(pngs[i])), images[i])


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_jp2_gives_one_line_error_and_no_output(tmp_path, phantom_dir):
    src = tmp_path / "src"
    shutil.copytree(phantom_dir, src)
    _truncate(src / "slice_00004.jp2")
    out = tmp_path / "data" / "prepared"
    result = cli("data", "prepare", src, "--out", out, "--size", "32")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "slice_00004.jp2" in errors[0] and "truncated" in errors[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and _leftovers(out.parent) == []


def test_skip_bad_continues_and_lists_the_bad_files(tmp_path, phantom_dir):
    src = tmp_path / "src"
    shutil.copytree(phantom_dir, src)
    _truncate(src / "slice_00004.jp2")
    (src / "slice_00009.jp2").write_bytes(b"\x00" * 100)
    manifest, _ = prepare(src, tmp_path / "out", PrepareParams(size=32, skip_bad=True), workers=2)
    assert manifest["count"] == 10
    assert [s["name"] for s in manifest["skipped"]] == ["slice_00004.jp2", "slice_00009.jp2"]
    assert all(s["name"] in s["error"] for s in manifest["skipped"])
    assert np.load(tmp_path / "out" / "images.npy").shape == (10, 32, 32)


def test_bad_inputs_give_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    mixed = _write_pngs(tmp_path / "mixed", [np.zeros((16, 16), np.uint8), np.zeros((20, 16), np.uint8)])
    small = _write_pngs(tmp_path / "small", [np.zeros((16, 16), np.uint8)])
    cases = [
        ([tmp_path / "missing"], "no such file"),
        ([empty], "empty"),
        ([other], "no supported slice files"),
        ([mixed], "mixed shapes"),
        ([small, "--size", "32"], "smaller than"),
        ([small, "--window-percentiles", "90", "10"], "--window-percentiles"),
    ]
    for args, message in cases:
        result = cli("data", "prepare", *args, "--out", tmp_path / "out")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
        assert not (tmp_path / "out").exists()


def test_cli_prepare_then_info(tmp_path, phantom_dir):
    out = tmp_path / "prepared"
    first = cli("data", "prepare", phantom_dir, "--out", out, "--size", "32")
    assert first.returncode == 0, first.stderr
    assert "prepared" in first.stdout and "12 x 1 x 32 x 32 uint8" in first.stdout
    assert f"{SMALL_PHANTOM.slices}/{SMALL_PHANTOM.slices}" in first.stderr  # plain progress lines
    again = cli("data", "prepare", phantom_dir, "--out", out, "--size", "32")
    assert again.returncode == 0 and "up to date" in again.stdout
    info = cli("data", "info", out)
    assert info.returncode == 0 and "percentiles 0.5 / 99.5" in info.stdout
    assert "assumption" in info.stdout

    full = tmp_path / "full"
    assert cli("data", "prepare", phantom_dir, "--out", full, "--size", "32", "--window", "full").returncode == 0
    info = cli("data", "info", full)
    assert info.returncode == 0 and "full, the whole 16-bit range: 0.0 .. 65535.0" in info.stdout


def test_data_needs_lists_each_prepared_set_once_with_whether_it_is_ready(tmp_path, prepared32):
    missing = tmp_path / "not_yet"
    specs = [
        write_spec(tmp_path, "a", "gan", prepared32),
        write_spec(tmp_path, "b", "wgan", missing),
        write_spec(tmp_path, "c", "dcgan", prepared32),
    ]
    sets, errors = needed_sets(specs)
    assert sets == [(prepared32, True), (missing, False)] and errors == []

    result = cli("data", "needs", *specs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{prepared32}\tready", f"{missing}\tmissing"]

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nmodel = "gan"\n[data]\nprepared = 3\n')
    result = cli("data", "needs", specs[0], bad)
    assert result.returncode == 2 and result.stdout.splitlines() == [f"{prepared32}\tready"]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and errors[0].startswith(f"error: {bad}: data.prepared")
    assert errors[1] == "error: 1 of 2 specs are invalid"
