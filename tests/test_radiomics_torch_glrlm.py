"""heartjobs.evaluation.radiomics_torch.glrlm equals pyradiomics' GLRLM: every feature within 1e-9 relative or
1e-12 absolute on what FRD v1's pipeline hands the class (phantom slices at 64 and 256 px, the adversarial
images, all 5 image types), on hand-made level arrays (one grey level, absent levels, holes, 1 x W, H x 1,
angles pyradiomics drops), NaN where pyradiomics gives NaN or raises, and a batch equal to one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heartjobs.evaluation.radiomics_torch import glrlm

from . import radiomics_cases as cases

CLASS = "glrlm"


def reference(levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return cases.reference_on_levels(CLASS, levels, mask)


def ours(levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return cases.one_image(glrlm.features, levels, mask)


assert_agree = cases.assert_agree


def _hand_made() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(30)
    readme = np.array([[5, 2, 5, 4, 4], [3, 3, 3, 1, 3], [2, 1, 1, 1, 3], [4, 2, 2, 2, 3], [3, 5, 3, 3, 2]])
    holes = np.ones((6, 7), bool)
    holes[2:4, 2:5] = False
    holes[0, 0] = False
    checker = (np.add.outer(np.arange(5), np.arange(6)) % 2).astype(bool)  # pixels touch only diagonally
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = corner[1, 1] = True  # only the (1, 1) angle has a line with two mask pixels
    made = {
        "pyradiomics_docstring": (readme, None),
        "one_level": (np.full((4, 5), 3), None),
        "one_level_high": (np.full((3, 3), 17), None),
        "two_levels": (np.array([[1, 1, 2], [2, 2, 2], [1, 2, 1]]), None),
        "absent_levels": (rng.choice([2, 5, 9], (6, 7)), None),
        "sparse_high_levels": (rng.choice([3, 400, 2500], (9, 8)), None),
        "holes": (rng.integers(1, 4, (6, 7)), holes),
        "stripes_long_runs": (np.repeat(np.array([[1], [2], [2], [3]]), 11, 1), None),
        "row_1x3": (np.array([[1, 1, 2]]), None),
        "row_1x6_gap": (np.array([[2, 2, 0, 2, 1, 1]]), np.array([[1, 1, 0, 1, 1, 1]], bool)),
        "column_4x1": (np.array([[1], [1], [2], [2]]), None),
        # one angle, no run left: RunEntropy and RunVariance 0 (sums over no column), the others NaN
        "row_1x3_one_pixel": (np.array([[3, 0, 0]]), np.array([[1, 0, 0]], bool)),
        "single_pixel_mask": (np.full((2, 2), 3), np.array([[0, 1], [0, 0]], bool)),
        "isolated_pixels": (np.array([[2, 0, 0], [0, 0, 4]]), np.array([[1, 0, 0], [0, 0, 1]], bool)),
        "diagonal_neighbours_only": (rng.integers(1, 3, (5, 6)), checker),
        "two_pixels_touching_at_a_corner": (np.array([[1, 0, 0], [0, 2, 0], [0, 0, 0]]), corner),
        "two_pixels_one_row_apart": (np.array([[2, 0, 3]]), np.array([[1, 0, 1]], bool)),
        "noise": (rng.integers(1, 30, (20, 13)), None),
    }
    return cases.masked_levels(made)


HAND_MADE = _hand_made()


@pytest.mark.parametrize("name", list(HAND_MADE))
def test_hand_made_levels_equal_pyradiomics(name):
    levels, mask = HAND_MADE[name]
    assert_agree(reference(levels, mask), ours(levels, mask), name)


def test_angles_pyradiomics_drops_leave_the_mean():
    """An angle none of whose lines holds two mask pixels is dropped: with one pixel every angle (NaN); with two
    pixels touching at a corner all but that diagonal, whose two runs of length 1 alone make the values."""
    levels, mask = HAND_MADE["single_pixel_mask"]
    assert all(np.isnan(value) for value in ours(levels, mask).values())
    levels, mask = HAND_MADE["two_pixels_touching_at_a_corner"]
    got = ours(levels, mask)
    assert got["ShortRunLowGrayLevelEmphasis"] == pytest.approx((1 + 1 / 4) / 2, rel=1e-15)
    assert got["RunPercentage"] == 1.0 and got["GrayLevelVariance"] == 0.25


def test_one_pixel_image_and_empty_mask_give_nan():
    """A 1 x 1 image has no angle (pyradiomics raises); an empty mask has no runs: NaN, not an error."""
    from radiomics import cMatrices

    with pytest.raises(RuntimeError, match="angle count"):
        cMatrices.calculate_glrlm(np.full((1, 1, 1), 2), np.ones((1, 1, 1), bool), 2, 1, True, 0)
    one = ours(np.full((1, 1), 2), np.ones((1, 1), bool))
    assert list(one) == list(glrlm.NAMES) and all(np.isnan(value) for value in one.values())
    batch = glrlm.features(
        torch.tensor([[[0, 0], [0, 0]], [[1, 2], [2, 2]]]), torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]]).bool()
    )
    assert all(torch.isnan(value[0]) and not torch.isnan(value[1]) for value in batch.values())


def test_a_batch_equals_one_image_at_a_time():
    """Images of one shape with different numbers of grey levels, grey levels and masks, in one batch."""
    rng = np.random.default_rng(7)
    images, masks = [], []
    for top in (1, 2, 5, 40, 300):
        levels = rng.integers(1, top + 1, (9, 12))
        levels[:, :4] = levels[:, :1]  # some long runs
        mask = rng.random((9, 12)) > 0.2
        images.append(np.where(mask, levels, 0))
        masks.append(mask)
    cases.assert_batch_equals_alone(glrlm.features, images, masks)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_pipeline_inputs_in_one_batch_equal_pyradiomics(size):
    cases.assert_pipeline_batch_agrees(glrlm.features, glrlm.NAMES, CLASS, size)
