"""heartjobs.evaluation.radiomics_torch.ngtdm equals pyradiomics' NGTDM: every feature within 1e-9 relative or
1e-12 absolute on what FRD v1's pipeline hands the class (phantom slices at 64 and 256 px, the adversarial
images, all 5 image types), on hand-made level arrays (one grey level, absent levels, holes, isolated
pixels, 1 x W, H x 1, the special values), NaN where pyradiomics raises, and a batch equal to one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heartjobs.evaluation.radiomics_torch import ngtdm

from . import radiomics_cases as cases

CLASS = "ngtdm"


def reference(levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return cases.reference_on_levels(CLASS, levels, mask)


def ours(levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return cases.one_image(ngtdm.features, levels, mask)


assert_agree = cases.assert_agree


def _hand_made() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(30)
    docstring = np.array([[1, 2, 5, 2], [3, 5, 1, 3], [1, 3, 5, 5], [3, 1, 1, 1]])  # no grey level 4
    holes = np.ones((6, 7), bool)
    holes[2:4, 2:5] = False
    holes[0, 0] = False
    checker = (np.add.outer(np.arange(5), np.arange(6)) % 2).astype(bool)
    made = {
        "pyradiomics_docstring": (docstring, None),
        "one_level": (np.full((4, 5), 3), None),  # Coarseness 1e6, the others 0
        "two_levels": (np.array([[1, 1, 2], [2, 2, 2], [1, 2, 1]]), None),
        "equal_i_times_p": (np.array([[1, 1, 2]]), None),  # 1 * 2/3 == 2 * 1/3: Busyness 0
        "absent_levels": (rng.choice([2, 5, 9], (6, 7)), None),
        "sparse_high_levels": (rng.choice([3, 400, 2500], (9, 8)), None),
        "close_high_levels": (rng.choice([2000, 2001], (7, 7)), None),
        "holes": (rng.integers(1, 4, (6, 7)), holes),
        "row_1x4": (np.array([[1, 2, 3, 5]]), None),
        "column_3x1": (np.array([[1], [2], [4]]), None),
        "row_1x3_one_pixel": (np.array([[3, 0, 0]]), np.array([[1, 0, 0]], bool)),
        "single_pixel_mask": (np.full((2, 2), 3), np.array([[0, 1], [0, 0]], bool)),
        "isolated_pixels": (np.array([[2, 0, 0], [0, 0, 4]]), np.array([[1, 0, 0], [0, 0, 1]], bool)),
        "isolated_and_joined": (np.array([[2, 3, 0, 4]]), np.array([[1, 1, 0, 1]], bool)),
        "diagonal_neighbours_only": (rng.integers(1, 3, (5, 6)), checker),
        "noise": (rng.integers(1, 30, (20, 13)), None),
    }
    return cases.masked_levels(made)


HAND_MADE = _hand_made()


@pytest.mark.parametrize("name", list(HAND_MADE))
def test_hand_made_levels_equal_pyradiomics(name):
    levels, mask = HAND_MADE[name]
    assert_agree(reference(levels, mask), ours(levels, mask), name)


def test_isolated_pixels_count_with_a_zero_difference():
    """pyradiomics' C code counts a mask pixel without neighbours in n_i with s_i += 0 (its docstring says
    such pixels are left out), probed on its own matrix."""
    from radiomics import cMatrices

    levels, mask = HAND_MADE["isolated_pixels"]
    matrix = cMatrices.calculate_ngtdm(levels[None], mask[None], np.array([1]), 4, True, 0)[0]
    assert matrix[[1, 3]].tolist() == [[1.0, 0.0, 2.0], [1.0, 0.0, 4.0]]
    n, s, ivector = ngtdm.matrix(torch.from_numpy(levels)[None], torch.from_numpy(mask)[None])
    assert n.tolist() == [[1.0, 1.0]] and s.tolist() == [[0.0, 0.0]] and ivector.tolist() == [[2.0, 4.0]]


def test_one_pixel_image_and_empty_mask_give_nan():
    """A 1 x 1 image has no angle (pyradiomics raises); an empty mask has nothing: NaN, not an error."""
    from radiomics import cMatrices

    with pytest.raises(RuntimeError, match="angle count"):
        cMatrices.calculate_ngtdm(np.full((1, 1, 1), 2), np.ones((1, 1, 1), bool), np.array([1]), 2, True, 0)
    one = ours(np.full((1, 1), 2), np.ones((1, 1), bool))
    assert list(one) == list(ngtdm.NAMES) and all(np.isnan(value) for value in one.values())
    batch = ngtdm.features(
        torch.tensor([[[0, 0], [0, 0]], [[1, 2], [2, 2]]]), torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]]).bool()
    )
    assert all(torch.isnan(value[0]) and not torch.isnan(value[1]) for value in batch.values())


def test_a_batch_equals_one_image_at_a_time():
    """Images of one shape with different numbers of grey levels, grey levels and masks, in one batch."""
    rng = np.random.default_rng(7)
    images, masks = [], []
    for top in (1, 2, 5, 40, 300):
        levels = rng.integers(1, top + 1, (9, 12))
        mask = rng.random((9, 12)) > 0.2
        images.append(np.where(mask, levels, 0))
        masks.append(mask)
    cases.assert_batch_equals_alone(ngtdm.features, images, masks)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_pipeline_inputs_in_one_batch_equal_pyradiomics(size):
    cases.assert_pipeline_batch_agrees(ngtdm.features, ngtdm.NAMES, CLASS, size)
