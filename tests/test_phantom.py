"""The synthetic phantom: HiP-CT-like JPEG 2000 files, determinism, and anatomy a GAN can learn."""

from __future__ import annotations

import json

import glymur
import numpy as np
import pytest
from PIL import Image

from heartjobs.data import jp2
from heartjobs.data.phantom import (
    AGAR,
    ATRIUM,
    CORONARY,
    FAT,
    JAR,
    LV,
    MYOCARDIUM,
    RV,
    VESSEL_LUMEN,
    VESSEL_WALL,
    Phantom,
    PhantomParams,
    contact_sheet_path,
    generate,
)
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_file

from .conftest import SMALL_PHANTOM


def _decoded(folder):
    return [glymur.Jp2k(str(p))[:] for p in sorted(folder.glob("*.jp2"))]


def test_files_are_hipct_like_jpeg2000(phantom_dir):
    files = sorted(phantom_dir.glob("*.jp2"))
    assert len(files) == SMALL_PHANTOM.slices
    jp = glymur.Jp2k(str(files[0]))
    assert jp.shape == (128, 128)
    assert jp[:].dtype == np.uint16
    cod = jp.codestream.segment[2]
    siz = jp.codestream.segment[1]
    assert cod.xform == 0  # irreversible 9/7 wavelet: lossy, as HiP-CT
    assert cod.num_res + 1 == jp2.numres_for((128, 128)) == 6
    assert (siz.xtsiz, siz.ytsiz) == (128, 128)  # tile = min(256, size)
    ratios = [(128 * 128 * 2) / f.stat().st_size for f in files]
    assert 6 < np.median(ratios) < 14  # about 10:1 (headers and tiny images blur the exact figure)


def test_default_size_has_six_resolution_levels_and_256_tiles(tmp_path):
    out = tmp_path / "p"
    generate(out, PhantomParams(slices=2, size=512, seed=1), workers=1)
    jp = glymur.Jp2k(str(out / "slice_00000.jp2"))
    assert jp.codestream.segment[2].num_res + 1 >= 6
    assert (jp.codestream.segment[1].xtsiz, jp.codestream.segment[1].ytsiz) == (256, 256)
    assert 7 < (512 * 512 * 2) / (out / "slice_00000.jp2").stat().st_size < 13


def test_manifest_records_parameters_and_hashes(phantom_dir):
    manifest = json.loads((phantom_dir / "manifest.json").read_text())
    assert manifest["parameters"] == {"slices": 12, "size": 128, "seed": 7}
    assert manifest["heartjobs_version"]
    assert len(manifest["files"]) == 12
    for entry in manifest["files"]:
        path = phantom_dir / entry["name"]
        assert entry["sha256"] == sha256_file(path)
        assert entry["bytes"] == path.stat().st_size


def test_contact_sheet_is_a_4x4_grid(phantom_dir):
    sheet = contact_sheet_path(phantom_dir)
    with Image.open(sheet) as img:
        # 12 slices: 4 columns x 3 rows of 128 px tiles with 2 px padding around each
        assert img.size == (4 * 128 + 5 * 2, 3 * 128 + 4 * 2)
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 20  # an image, not a blank


def test_same_seed_gives_identical_decoded_pixels(tmp_path, phantom_dir):
    again = tmp_path / "again"
    generate(again, SMALL_PHANTOM, workers=2)  # parallel workers must not change a pixel
    for a, b in zip(_decoded(phantom_dir), _decoded(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_other_seed_gives_other_shapes():
    a = Phantom(PhantomParams(slices=20, size=64, seed=1)).render_slice(10)[1]
    b = Phantom(PhantomParams(slices=20, size=64, seed=2)).render_slice(10)[1]
    assert (a != b).mean() > 0.05


def test_existing_phantom_is_kept_and_other_content_is_refused(tmp_path, phantom_dir):
    manifest, made = generate(phantom_dir, SMALL_PHANTOM)
    assert not made and manifest["parameters"]["seed"] == 7
    with pytest.raises(HeartjobsError, match="--force"):
        generate(phantom_dir, PhantomParams(slices=3, size=64, seed=7))


def _tissue_means(image, labels):
    return {k: image[labels == k].mean() for k in np.unique(labels)}


def test_anatomy_changes_from_apex_to_base():
    phantom = Phantom(PhantomParams(slices=100, size=256, seed=3))
    labels = [phantom.render_slice(i)[1] for i in (2, 45, 80, 99)]
    apex, mid, upper, base = (set(np.unique(lab)) for lab in labels)
    assert {JAR, AGAR, FAT, MYOCARDIUM} <= apex
    assert ATRIUM not in apex and VESSEL_WALL not in apex
    assert {LV, RV, CORONARY} <= mid and ATRIUM not in mid
    assert ATRIUM in upper
    assert {VESSEL_WALL, VESSEL_LUMEN} <= base
    # the heart grows from the apex: more myocardium mid-stack than at the apex
    heart = [np.isin(lab, [FAT, MYOCARDIUM, LV, RV]).sum() for lab in labels[:2]]
    assert heart[1] > 3 * heart[0]


def test_neighbouring_slices_are_similar_and_distant_ones_are_not():
    phantom = Phantom(PhantomParams(slices=200, size=128, seed=5))
    a, b, far = (phantom.render_slice(i)[1] for i in (100, 101, 180))
    assert (a != b).mean() < 0.03
    assert (a != far).mean() > 0.1


def test_cavities_are_darker_than_myocardium_after_jpeg2000(phantom_dir):
    # Decoded lossy pixels against the ground-truth labels of the same slice.
    phantom = Phantom(SMALL_PHANTOM)
    for index in (5, 7):
        _, labels = phantom.render_slice(index)
        image = glymur.Jp2k(str(phantom_dir / f"slice_{index:05d}.jp2"))[:].astype(float)
        means = _tissue_means(image, labels)
        assert means[LV] < means[FAT] < means[MYOCARDIUM]
        assert means[RV] < means[MYOCARDIUM]
        assert means[FAT] < means[AGAR] < means[JAR]


def test_textures_are_not_flat():
    image, labels = Phantom(PhantomParams(slices=10, size=256, seed=0)).render_slice(5)
    image = image.astype(float)
    # granular agar and fibrous myocardium vary well beyond the imaging noise (std 1100)
    assert image[labels == AGAR].std() > 1800
    assert image[labels == MYOCARDIUM].std() > 1500


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(HeartjobsError, match="--size"):
        generate(tmp_path / "x", PhantomParams(size=8))
    assert not (tmp_path / "x").exists()
