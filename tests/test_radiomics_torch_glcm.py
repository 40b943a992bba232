"""radiomics_torch.glcm equals pyradiomics' GLCM class (FRD v1's 22 features, in its order) to 1e-9 relative or
1e-12 absolute (ClusterShade: see assert_close): on what pyradiomics' own pipeline hands the class for phantom slices
(64 and 256 px) and adversarial images (32, 64, 256 px; all 5 image types), on hand-made level arrays (one grey
level, two, gaps between the levels, masks with holes and of isolated pixels, 1 x N and N x 1 images, where
pyradiomics has one angle, an exactly independent pattern), and a batch of images with different Ng and masks
equals the images one at a time."""

from __future__ import annotations

import math
import warnings
from functools import cache

import numpy as np
import pytest
import torch

from heartjobs.evaluation.radiomics_torch import glcm
from tests import radiomics_cases as cases

RTOL, ATOL = 1e-9, 1e-12


@cache
def reference_inputs(kind: str) -> tuple[tuple[str, np.ndarray, np.ndarray, dict[str, float]], ...]:
    """(label, levels, mask, pyradiomics' GLCM features) of every image type of a set of 8-bit images."""
    if kind == "phantom64":
        images = {f"phantom64-{k}": image for k, image in enumerate(cases.phantom_slices(64, 6))}
    elif kind == "phantom256":
        images = {f"phantom256-{k}": image for k, image in enumerate(cases.phantom_slices(256, 4, seed=3))}
    else:  # constant fails in pyradiomics' preprocessing: the one-level case is a hand-made test below
        images = {
            f"{name}-{size}": image
            for size in (32, 64, 256)
            for name, image in cases.adversarial_images(size).items()
            if name != "constant"
        }
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's warnings on pyradiomics' NaN paths
        for label, image in images.items():
            for image_type, (sitk_image, sitk_mask, settings) in cases.class_inputs(image).items():
                levels, mask = cases.binned(sitk_image, sitk_mask, settings)
                reference = cases.class_features("glcm", sitk_image, sitk_mask, settings)
                out.append((f"{label}/{image_type}", levels, mask, reference))
    return tuple(out)


def hand_reference(levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """pyradiomics' GLCM features of a hand-made level array: an image whose binning (width 5) gives exactly
    these levels inside the mask."""
    settings = cases.extractor().settings.copy()
    sitk_image, sitk_mask = cases.sitk_pair(levels * 5.0 - 2.5, mask.astype(np.uint8))
    binned, _ = cases.binned(sitk_image, sitk_mask, settings)
    assert (binned == np.where(mask, levels, 0)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cases.class_features("glcm", sitk_image, sitk_mask, settings)


def ours(levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    out = glcm.features(torch.from_numpy(levels)[None], torch.from_numpy(mask)[None])
    return {name: float(value[0]) for name, value in out.items()}


def assert_close(
    got: dict[str, float], want: dict[str, float], label: str, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """Within RTOL or ATOL; ClusterShade, a sum of cubes that cancel (0 for a symmetric histogram), within ATOL
    times the size of its terms, sum p |i + j - 2 ux|^3 <= (ClusterProminence x ClusterTendency)^(1/2): pyradiomics'
    own rounding leaves e.g. -6.8e-12 where the exact value is 0 (two_level-32)."""
    assert list(got) == list(want), label
    for name, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[name]), f"{label} {name}: {got[name]} != NaN"
            continue
        scale = math.sqrt(want["ClusterProminence"] * want["ClusterTendency"]) if name == "ClusterShade" else 1.0
        assert got[name] == pytest.approx(value, rel=rtol, abs=atol * max(1.0, scale)), f"{label} {name}"


def test_names_are_frd_v1s_glcm_features_in_pyradiomics_order():
    assert list(glcm.NAMES) == list(cases.extractor().enabledFeatures["glcm"])


@pytest.mark.parametrize("kind", ["phantom64", "phantom256", "adversarial"])
def test_equals_pyradiomics_on_its_own_inputs_batched(kind):
    inputs = reference_inputs(kind)
    by_shape: dict[tuple[int, int], list] = {}
    for item in inputs:
        by_shape.setdefault(item[1].shape, []).append(item)
    for items in by_shape.values():  # one batch per image size: different Ng, different grey levels present
        levels = torch.from_numpy(np.stack([item[1] for item in items]))
        mask = torch.from_numpy(np.stack([item[2] for item in items]))
        out = glcm.features(levels, mask)
        for index, (label, _, _, reference) in enumerate(items):
            assert_close({name: float(value[index]) for name, value in out.items()}, reference, label)


def test_batch_equals_one_image_at_a_time():
    items = reference_inputs("phantom64") + reference_inputs("adversarial")
    items = [item for item in items if item[1].shape == (32, 32)]
    assert len({int(item[1].max()) for item in items}) > 5  # Ng differs across the batch
    levels = torch.from_numpy(np.stack([item[1] for item in items]))
    mask = torch.from_numpy(np.stack([item[2] for item in items]))
    batched = glcm.features(levels, mask)
    for index, (label, item_levels, item_mask, _) in enumerate(items):
        # not bit for bit: the per-group vectors are padded to the batch's largest Ng, which changes the order of
        # torch's vectorised sums
        got = {name: float(value[index]) for name, value in batched.items()}
        assert_close(got, ours(item_levels, item_mask), label, rtol=1e-13, atol=1e-15)


def test_batch_with_holed_masks_equals_one_image_at_a_time():
    rng = np.random.default_rng(7)
    levels = np.stack([rng.integers(1, top, (9, 11)) for top in (2, 3, 8, 30, 60)])
    mask = rng.random(levels.shape) > np.array([0.0, 0.3, 0.5, 0.7, 0.9])[:, None, None]
    levels = np.where(mask, levels, 0)
    batched = glcm.features(torch.from_numpy(levels), torch.from_numpy(mask))
    for index in range(len(levels)):
        got = {name: float(value[index]) for name, value in batched.items()}
        assert_close(got, ours(levels[index], mask[index]), str(index), rtol=1e-13, atol=1e-15)


RNG = np.random.default_rng(30)
HAND_MADE = {
    "one level": (np.ones((5, 6), np.int64), None),
    "two levels": (np.array([[1, 1, 2, 2], [1, 2, 2, 1], [2, 2, 1, 1]]), None),
    "levels with gaps (Ng is the largest level, not the count)": (
        np.array([[1, 1, 4, 4], [1, 4, 4, 9], [9, 9, 1, 1]]),
        None,
    ),
    "mask with holes": (RNG.integers(1, 7, (9, 11)), RNG.random((9, 11)) > 0.3),
    "one level in a holed mask": (np.ones((6, 7), np.int64), RNG.random((6, 7)) > 0.4),
    "1 x 3 (only the horizontal angle has pairs)": (np.array([[1, 2, 1]]), None),
    "3 x 1 (only the vertical angle has pairs)": (np.array([[1], [3], [2]]), None),
    "1 x 2 of one level": (np.array([[1, 1]]), None),
    "isolated pixels (no angle has a pair: all NaN)": (
        np.array([[1, 0, 2], [0, 0, 0], [3, 0, 1]]),
        np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]], bool),
    ),
    "1 x 5, no pair in the mask, one level (pyradiomics' sole angle kept: all NaN but InverseVariance 0)": (
        np.array([[1, 0, 1, 0, 1]]),
        np.array([[1, 0, 1, 0, 1]], bool),
    ),
    "4 x 1, no pair in the mask, two levels (all NaN)": (
        np.array([[1], [0], [2], [0]]),
        np.array([[1], [0], [1], [0]], bool),
    ),
    "exactly independent (Imc2 0)": (np.array([[1, 1, 2, 2, 1, 1, 2, 2, 1]]), None),
    "pairs on one diagonal only": (np.array([[1, 0], [0, 2]]), np.array([[1, 0], [0, 1]], bool)),
    "random 40 levels": (RNG.integers(1, 41, (12, 12)), None),
}


@pytest.mark.parametrize("name", list(HAND_MADE))
def test_equals_pyradiomics_on_hand_made_levels(name):
    levels, mask = HAND_MADE[name]
    mask = np.ones(levels.shape, bool) if mask is None else mask
    levels = np.where(mask, levels, 0).astype(np.int64)
    assert_close(ours(levels, mask), hand_reference(levels, mask), name)


def test_one_pixel_is_nan():
    # pyradiomics raises ("Error getting angle count") for a 1 x 1 image; there is no pair in any angle
    out = ours(np.array([[3]]), np.ones((1, 1), bool))
    assert list(out) == list(glcm.NAMES) and all(math.isnan(value) for value in out.values())


def test_empty_batch_and_dtype():
    out = glcm.features(torch.zeros((0, 4, 4), dtype=torch.int64), torch.zeros((0, 4, 4), dtype=torch.bool))
    assert all(value.shape == (0,) for value in out.values())
    levels = torch.from_numpy(HAND_MADE["two levels"][0])[None]
    out = glcm.features(levels, torch.ones_like(levels, dtype=torch.bool))
    assert all(value.dtype == torch.float64 and value.shape == (1,) for value in out.values())
