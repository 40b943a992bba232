"""radiomics_torch.glszm equals pyradiomics' GLSZM class: its zones equal the matrix of radiomics'
_cmatrices.calculate_glszm on random small arrays; its 16 features equal RadiomicsGLSZM's on what the FRD v1
pipeline hands the class (phantom slices at 64 and 256 px, adversarial images; every image type), on
hand-made level arrays (one level, gaps between levels, masks with holes, 1 x 3), and on 128 x 128 zones that
snake through the image (a spiral, combs, serpentines), which the labelling must resolve in few rounds.
One batch of all of them, of different sizes and Ng, gives what each image gives alone."""

from __future__ import annotations

import math
from collections import Counter
from functools import cache

import numpy as np
import pytest
import torch

from heartjobs.evaluation.radiomics_torch import glszm
from tests import radiomics_cases as cases

REL, ABS = 1e-9, 1e-12


def _close(ours: float, ref: float) -> bool:
    if math.isnan(ref) or math.isnan(ours):
        return math.isnan(ref) and math.isnan(ours)
    return abs(ours - ref) <= max(ABS, REL * abs(ref))


def _hand_made(levels: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(levels, mask, pyradiomics' values) for a hand-made level array (levels >= 1; min 1 in the mask):
    an image whose values 5 L - 2.5 bin (binWidth 5) to exactly L, through pyradiomics' own GLSZM class."""
    mask = np.ones(levels.shape, np.uint8) if mask is None else mask.astype(np.uint8)
    image, sitk_mask = cases.sitk_pair(5.0 * levels - 2.5, mask)
    settings = cases.extractor().settings.copy()
    binned, binned_mask = cases.binned(image, sitk_mask, settings)
    assert np.array_equal(binned, np.where(mask, levels, 0)), "the image does not bin to the intended levels"
    return binned, binned_mask, cases.class_features("glszm", image, sitk_mask, settings)


def _snakes(size: int) -> dict[str, np.ndarray]:
    """Level arrays whose zones wind through the whole image: the worst cases for label propagation."""
    spiral = cases.adversarial_images(size)["spiral"]
    spiral = np.where(spiral > 0, 2, 1)
    comb = np.ones((size, size), np.int64)
    comb[:, ::2] = 2
    comb[-1] = 2  # teeth up from a spine along the bottom
    serpentine = np.ones((size, size), np.int64)
    serpentine[:, ::2] = 2
    for column in range(1, size, 2):
        serpentine[0 if (column // 2) % 2 else size - 1, column] = 2  # join the columns alternately
    y, x = np.mgrid[:size, :size]
    return {
        "maze": _maze(size),
        "spiral": spiral,
        "spiral_rotated": np.rot90(spiral).copy(),
        "spiral_flipped": spiral[::-1, ::-1].copy(),
        "comb": comb,
        "comb_down": comb[::-1].copy(),
        "comb_sideways": comb.T.copy(),
        "serpentine": serpentine,
        "serpentine_rows": serpentine.T.copy(),
        "stripes": np.where((y // 3) % 2 == 0, 1, 2),
        "diagonal_stripes": np.where((x + y) % 3 == 0, 2, 1),
        "checkerboard": np.where((x + y) % 2 == 0, 1, 2),  # 8-connected: one zone per colour
    }


def _maze(size: int) -> np.ndarray:
    """A random depth-first-search maze of one-pixel corridors (level 2; walls level 1): one zone that is
    a random tree through the image (diagonal contacts only ever join corridors at a shared cell)."""
    rng = np.random.default_rng(size)
    cells = (size - 1) // 2
    maze = np.ones((size, size), np.int64)
    seen = np.zeros((cells, cells), bool)
    stack = [(0, 0)]
    seen[0, 0] = True
    maze[1, 1] = 2
    while stack:
        row, col = stack[-1]
        steps = [
            (dr, dc)
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
            if 0 <= row + dr < cells and 0 <= col + dc < cells and not seen[row + dr, col + dc]
        ]
        if not steps:
            stack.pop()
            continue
        dr, dc = steps[rng.integers(len(steps))]
        seen[row + dr, col + dc] = True
        maze[2 * row + 1 + dr, 2 * col + 1 + dc] = 2
        maze[2 * (row + dr) + 1, 2 * (col + dc) + 1] = 2
        stack.append((row + dr, col + dc))
    return maze


@cache
def pipeline_cases() -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    """(name, levels, mask, pyradiomics' values) for every image type of phantom slices at 64 and 256 px and
    of the adversarial images at 64 and 256 px ('constant' fails in pyradiomics' preprocessing)."""
    images = {f"phantom64-{i}": s for i, s in enumerate(cases.phantom_slices(64, 4))}
    images |= {f"phantom256-{i}": s for i, s in enumerate(cases.phantom_slices(256, 2))}
    for size in (64, 256):
        images |= {f"{k}{size}": v for k, v in cases.adversarial_images(size).items() if k != "constant"}
    out = []
    for name, image in images.items():
        for kind, (sitk_image, sitk_mask, settings) in cases.class_inputs(image).items():
            levels, mask = cases.binned(sitk_image, sitk_mask, settings)
            out.append((f"{name}/{kind}", levels, mask, cases.class_features("glszm", sitk_image, sitk_mask, settings)))
    return out


@cache
def hand_made_cases() -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    rng = np.random.default_rng(3)
    holes = rng.random((12, 12)) < 0.7
    holes[0, 0] = True
    out = {
        "one_level": _hand_made(np.ones((6, 7), np.int64)),
        "one_level_one_zone_per_pixel": _hand_made(np.ones((5, 5), np.int64), _dots(5)),
        "two_levels": _hand_made(np.array([[1, 1, 2], [2, 2, 1], [1, 2, 2]])),
        "level_gaps": _hand_made(np.array([[1, 1, 9], [9, 9, 1], [30, 30, 1]])),
        "docstring_example": _hand_made(
            np.array([[5, 2, 5, 4, 4], [3, 3, 3, 1, 3], [2, 1, 1, 1, 3], [4, 2, 2, 2, 3], [3, 5, 3, 3, 2]])
        ),
        "holes": _hand_made(rng.integers(1, 4, (12, 12)), holes),
        "hole_splits_a_zone": _hand_made(np.ones((3, 5), np.int64), np.array([[1, 1, 0, 1, 1]] * 3)),
        "diagonal_across_a_hole": _hand_made(np.ones((2, 2), np.int64), np.eye(2)),
        "row_1x3": _hand_made(np.array([[1, 2, 1]])),
        "column_3x1": _hand_made(np.array([[1], [1], [2]])),
    }
    for name, levels in _snakes(128).items():
        out[f"snake-{name}"] = _hand_made(levels)
    return [(name, *case) for name, case in out.items()]


def _dots(size: int) -> np.ndarray:
    """Every other pixel of every other row: isolated pixels, each its own zone."""
    dots = np.zeros((size, size), bool)
    dots[::2, ::2] = True
    return dots


def _batch(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch, padded to the largest height and width with masked-out pixels."""
    height = max(levels.shape[0] for levels, _ in items)
    width = max(levels.shape[1] for levels, _ in items)
    levels_out = torch.zeros(len(items), height, width, dtype=torch.int64)
    mask_out = torch.zeros(len(items), height, width, dtype=torch.bool)
    for index, (levels, mask) in enumerate(items):
        levels_out[index, : levels.shape[0], : levels.shape[1]] = torch.from_numpy(levels)
        mask_out[index, : mask.shape[0], : mask.shape[1]] = torch.from_numpy(mask)
    return levels_out, mask_out


def _assert_agrees(all_cases, values: dict[str, torch.Tensor]) -> None:
    assert list(values) == list(glszm.FEATURES)
    bad = []
    for index, (name, _, _, ref) in enumerate(all_cases):
        assert list(ref) == list(glszm.FEATURES), "pyradiomics' order"
        for feature, expected in ref.items():
            ours = float(values[feature][index])
            if not _close(ours, expected):
                bad.append(f"{name} {feature}: ours {ours!r}, pyradiomics {expected!r}")
    assert not bad, "\n".join(bad[:20])


def test_zones_equal_calculate_glszm_on_random_small_arrays():
    from radiomics import cMatrices

    rng = np.random.default_rng(0)
    for _ in range(400):
        height, width = (int(n) for n in rng.integers(1, 8, 2))
        if height * width == 1:
            continue  # calculate_glszm finds no angle in a 1 x 1 image and raises
        mask = rng.random((height, width)) < rng.choice([0.6, 1.0])
        mask.flat[0] = True
        levels = np.where(mask, rng.integers(1, int(rng.integers(1, 4)) + 1, (height, width)), 0)
        matrix = cMatrices.calculate_glszm(levels[None], mask[None], int(levels.max()), int(mask.sum()), True, 0)[0]
        expected = {(g + 1, s + 1): int(matrix[g, s]) for g, s in zip(*np.nonzero(matrix), strict=True)}
        found = glszm.zones(torch.from_numpy(levels)[None], torch.from_numpy(mask)[None])
        ours = Counter(zip(found["level"].tolist(), found["size"].tolist(), strict=True))
        assert dict(ours) == expected, (levels, mask)


def test_pipeline_inputs_agree_with_pyradiomics():
    all_cases = pipeline_cases()
    _assert_agrees(all_cases, glszm.features(*_batch([(levels, mask) for _, levels, mask, _ in all_cases])))


def test_hand_made_levels_agree_with_pyradiomics():
    all_cases = hand_made_cases()
    _assert_agrees(all_cases, glszm.features(*_batch([(levels, mask) for _, levels, mask, _ in all_cases])))


@pytest.mark.parametrize("name", list(_snakes(128)))
def test_snaking_zones_resolve_in_few_rounds(name):
    """A zone winding through all 128 x 128 pixels: the hook-and-jump labelling needs O(log(H W)) rounds
    (2 to 8 seen, the last one confirming), where propagating labels between neighbours needs thousands."""
    levels = torch.from_numpy(_snakes(128)[name])[None]
    found = glszm.zones(levels, torch.ones_like(levels, dtype=torch.bool))
    assert found["rounds"] <= 10, found["rounds"]
    assert int(found["size"].sum()) == 128 * 128


def test_a_batch_equals_each_image_alone_and_an_empty_mask_is_nan():
    chosen = [c for c in pipeline_cases() if c[0].endswith("/original")][:6] + hand_made_cases()[:8]
    items = [(levels, mask) for _, levels, mask, _ in chosen]
    empty = (np.ones((4, 4), np.int64), np.zeros((4, 4), bool))
    batched = glszm.features(*_batch([*items, empty]))
    for index, item in enumerate(items):
        alone = glszm.features(*_batch([item]))
        for feature in glszm.FEATURES:
            assert _close(float(batched[feature][index]), float(alone[feature][0])), (chosen[index][0], feature)
    for feature in glszm.FEATURES:
        assert batched[feature].dtype == torch.float64
        assert math.isnan(float(batched[feature][-1])), feature


def test_check_every_changes_nothing():
    """On a GPU the labelling checks convergence every few rounds only; the zones are the same."""
    levels = torch.from_numpy(np.stack(list(_snakes(32).values())))
    mask = torch.ones_like(levels, dtype=torch.bool)
    one, four = glszm.zones(levels, mask, check_every=1), glszm.zones(levels, mask, check_every=4)
    for key in ("image", "level", "size"):
        assert torch.equal(one[key], four[key])


def test_counting_zones_by_sorting_gives_what_the_dense_histogram_gives(monkeypatch):
    """Zones up to a few dozen pixels are counted in a dense histogram, larger ones by sorting; with no room
    for the histogram (a batch of many levels) nearly all go the sorting way, with the same values."""
    chosen = pipeline_cases()[:10] + hand_made_cases()
    batch = _batch([(levels, mask) for _, levels, mask, _ in chosen])
    dense = glszm.features(*batch)
    monkeypatch.setattr(glszm, "_DENSE_BINS", 1)
    sorted_ = glszm.features(*batch)
    for feature in glszm.FEATURES:
        assert torch.allclose(dense[feature], sorted_[feature], rtol=1e-12, atol=0, equal_nan=True), feature


def test_one_zone_has_pyradiomics_entropy_of_minus_log2_one_plus_eps():
    """-p log2(p + eps) with p = 1: pyradiomics' ZoneEntropy of a single zone is -3.2e-16, not 0."""
    name, levels, mask, ref = hand_made_cases()[0]
    assert name == "one_level"
    ours = float(glszm.features(*_batch([(levels, mask)]))["ZoneEntropy"][0])
    assert ours == ref["ZoneEntropy"] == -math.log2(1 + np.spacing(1))
