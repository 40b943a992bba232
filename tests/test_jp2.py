"""JPEG 2000 reading and writing through glymur: round trip and reduced-resolution decoding."""

from __future__ import annotations

import glymur
import numpy as np
import pytest

from heartjobs.data import jp2, slices
from heartjobs.errors import HeartjobsError


def _smooth_uint16(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 30000 + 12000 * np.sin(6 * x) * np.cos(4 * y) + rng.normal(0, 300, (size, size))
    return image.astype(np.uint16)


def test_lossy_round_trip_keeps_the_image(tmp_path):
    image = _smooth_uint16(256)
    path = tmp_path / "a.jp2"
    jp2.write_hipct_like(path, image)
    back = glymur.Jp2k(str(path))[:]
    assert back.dtype == np.uint16 and back.shape == image.shape
    assert not np.array_equal(back, image)  # lossy, as HiP-CT
    error = np.abs(back.astype(float) - image).mean()
    assert error < 400  # well under the signal's own spread (std ~ 6000)
    shape, bits, levels = jp2.header(path)
    assert shape == (256, 256) and bits == 16 and levels == 5


@pytest.mark.parametrize("reduce", [1, 2, 3])
def test_reduced_resolution_decode_has_the_expected_size_and_content(tmp_path, reduce):
    image = _smooth_uint16(256)
    path = tmp_path / "a.jp2"
    jp2.write_hipct_like(path, image)
    small = jp2.read(path, reduce)
    factor = 2**reduce
    assert small.shape == (256 // factor, 256 // factor)
    # a wavelet low-pass of the image: it follows the block mean closely, at the same brightness
    block_mean = image.reshape(256 // factor, factor, 256 // factor, factor).mean(axis=(1, 3))
    assert np.corrcoef(small.ravel(), block_mean.ravel())[0, 1] > 0.995
    assert abs(small.mean() - block_mean.mean()) < 100


@pytest.mark.parametrize(
    ("side", "target", "levels", "expected"),
    [
        (5792, 256, 10, 4),
        (2048, 256, 5, 3),
        (2048, 256, 2, 2),
        (256, 256, 5, 0),
        (300, 256, 5, 0),
        (1456, 256, 1, 1),
    ],
)
def test_reduction_picks_the_smallest_level_still_covering_the_target(side, target, levels, expected):
    r = jp2.reduction_for(side, target, levels)
    assert r == expected
    assert -(-side // 2**r) >= target


def test_decode_uses_the_reduced_level_and_matches_full_decode(tmp_path):
    image = _smooth_uint16(512)
    path = tmp_path / "a.jp2"
    jp2.write_hipct_like(path, image)
    fast = slices.decode(path, 64, reduced=True)
    slow = slices.decode(path, 64, reduced=False)
    assert fast.shape == slow.shape == (64, 64)
    # both routes low-pass the same image (wavelet vs box filter): same picture, same brightness
    assert np.corrcoef(fast.ravel(), slow.ravel())[0, 1] > 0.995
    assert abs(fast.mean() - slow.mean()) < 100


def test_numres_adapts_to_small_images():
    assert jp2.numres_for((512, 512)) == 6
    assert jp2.numres_for((32, 32)) == 6
    assert jp2.numres_for((16, 16)) == 5


def test_glymur_sample_files_decode_to_gray():
    for path, shape in ((glymur.data.nemo(), (1456, 2592)), (glymur.data.goodstuff(), (800, 480))):
        info = slices.probe(path)
        assert (info.height, info.width) == shape and info.bits == 8
        gray = slices.decode(path, 128)
        assert gray.shape == (128, 128) and gray.dtype == np.float32
        assert 0 <= gray.min() < gray.max() <= 255


def test_garbage_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "junk.jp2"
    path.write_bytes(b"not a jpeg 2000 file at all")
    with pytest.raises(HeartjobsError, match="junk.jp2"):
        slices.probe(path)
