"""Precision, recall, density and coverage (heartjobs.evaluation.manifold) against the authors' package, prdc
0.2, on random and on phantom features in the Inception and the radiomics space; what they say on identical
sets and on a mode-collapsed generator; their protocol and their errors."""

from __future__ import annotations

import contextlib
import io
import tracemalloc

import numpy as np
import pytest
import torch

from heartjobs.data.phantom import Phantom, PhantomParams
from heartjobs.errors import HeartjobsError
from heartjobs.evaluation import radiomics
from heartjobs.evaluation.inception import FeatureExtractor
from heartjobs.evaluation.manifold import DEFAULT_K, prdc, prdc_radiomics, radiomic_space
from heartjobs.evaluation.weights import resolve_weights

KEYS = ("precision", "recall", "density", "coverage")


def reference(real, generated, k=DEFAULT_K) -> dict:
    """prdc.compute_prdc (it prints the set sizes: kept off the test output)."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):
        return {key: float(value) for key, value in compute_prdc(real, generated, k).items()}


def assert_equal_to_prdc(ours: dict, theirs: dict) -> None:
    for key in KEYS:
        assert abs(ours[key] - theirs[key]) <= 1e-6, (key, ours[key], theirs[key])


def slices(count: int, seed: int) -> np.ndarray:
    phantom = Phantom(PhantomParams(slices=count, size=64, seed=seed))
    return np.stack([(phantom.render_slice(i)[0] / 65535 * 255).astype(np.uint8) for i in range(count)])


@pytest.fixture(scope="module")
def phantom_sets():
    """Real: the even slices of a phantom; generated: its odd slices (a good generator: new images from the
    same anatomy); collapsed: 4 of those repeated 15 times each (a generator stuck on a few modes)."""
    images = slices(120, seed=0)
    real, generated = images[0::2], images[1::2]
    modes = [10, 25, 40, 55]
    return real, generated, modes


@pytest.fixture(scope="module")
def inception_features(phantom_sets):
    """2048-d Inception pool features (untrained weights: the arithmetic is what is tested)."""
    real, generated, modes = phantom_sets
    extractor = FeatureExtractor(resolve_weights("untrained"), 2048, torch.device("cpu"), 60)
    features = [extractor(torch.from_numpy(x[:, None])) for x in (real, generated)]
    return features[0], features[1], np.repeat(features[1][modes], 15, axis=0)


@pytest.fixture(scope="module")
def radiomic_features(phantom_sets):
    real, generated, modes = phantom_sets
    found = [radiomics.extract(x, label, workers=1) for x, label in ((real, "real"), (generated, "generated"))]
    collapsed = radiomics.RadiomicFeatures(found[1].names, np.repeat(found[1].values[modes], 15, axis=0))
    return found[0], found[1], collapsed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("n", "m", "dims", "k"), [(200, 150, 64, 5), (300, 400, 2048, 5), (40, 12, 3, 3), (90, 90, 16, 10)]
)
def test_equals_prdc_on_random_features(dtype, n, m, dims, k):
    rng = np.random.default_rng(n + m + dims + k)
    real = rng.normal(size=(n, dims)).astype(dtype)
    # overlapping but different: every one of the four numbers strictly between 0 and 1 in low dims
    generated = (rng.normal(size=(m, dims)) * 1.2 + 0.3).astype(dtype)
    theirs = reference(real, generated, k)
    for chunk in (1, 7, 1024):  # the chunking changes nothing, not even the last bit
        ours = prdc(real, generated, k, chunk=chunk)
        assert_equal_to_prdc(ours, theirs)
        assert {key: ours[key] for key in KEYS} == theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_prdc_on_ties_duplicates_and_one_array_twice(dtype):
    """Exact duplicates make distances that tie a radius up to round-off: the same arithmetic as sklearn's
    (no syrk for x @ x.T, the diagonal zeroed where prdc passes one array twice) gives the same answers."""
    rng = np.random.default_rng(1)
    real = rng.normal(size=(120, 32)).astype(dtype)
    collapsed = real[rng.integers(0, 4, 120)]
    for generated in (collapsed, real.copy(), real, np.concatenate([real[:60], collapsed[:60]])):
        assert_equal_to_prdc(prdc(real, generated), reference(real, generated))
    grid = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0)), -1).reshape(-1, 2).astype(dtype)  # many ties
    assert_equal_to_prdc(prdc(grid, grid[::-1] + 0.5), reference(grid, grid[::-1] + 0.5))


@pytest.mark.slow
def test_equals_prdc_on_phantom_inception_features(inception_features):
    real, generated, collapsed = inception_features
    assert real.shape == (60, 2048) and real.dtype == np.float64
    for other in (generated, collapsed, real.copy()):
        assert_equal_to_prdc(prdc(real, other, space="inception"), reference(real, other))
        # float32 features (a cache may hold them so): prdc's float32 arithmetic, the same answers
        r32, o32 = real.astype(np.float32), other.astype(np.float32)
        assert_equal_to_prdc(prdc(r32, o32), reference(r32, o32))
    # torch tensors go in as they are
    assert_equal_to_prdc(prdc(torch.from_numpy(real), torch.from_numpy(generated)), reference(real, generated))


def test_equals_prdc_on_phantom_radiomic_features(radiomic_features):
    real, generated, collapsed = radiomic_features
    for other in (generated, collapsed, real):
        real_z, other_z, _ = radiomic_space(real, other)
        assert_equal_to_prdc(prdc_radiomics(real, other), reference(real_z, other_z))


def test_radiomic_space_is_frds(radiomic_features):
    """The same rows, columns and values FRD's pipeline uses: dropped NaN rows counted, the real set's
    z-scores (mean 0, std 1 per kept column), the column count frechet_radiomics_distance reports."""
    real, generated, _ = radiomic_features
    with_constant = radiomics.RadiomicFeatures(
        generated.names, np.concatenate([generated.values, np.full((2, generated.values.shape[1]), np.nan)])
    )
    real_z, generated_z, protocol = radiomic_space(real, with_constant)
    frd = radiomics.frechet_radiomics_distance(real, with_constant)
    assert protocol["n_real_used"] == frd.n_real == 60
    assert protocol["n_generated_used"] == frd.n_generated == 60  # the two NaN rows (constant images) dropped
    assert protocol["features_used"] == frd.features_used == real_z.shape[1] == generated_z.shape[1]
    assert real_z.dtype == np.float32 and np.isfinite(real_z).all() and np.isfinite(generated_z).all()
    # the real set's own z-scores (float32 statistics of features up to ~1e9: a few 1e-4 off 0 and 1)
    assert np.abs(real_z.mean(axis=0, dtype=np.float64)).max() < 1e-3
    assert np.abs(real_z.std(axis=0, dtype=np.float64) - 1).max() < 1e-3
    # FRD's shift is the generated mean in this space: the same float32 values, to the last bit
    assert np.array_equal(np.mean(generated_z, axis=0).astype(np.float64), frd.shift)


# the Inception features take ~14 s to extract on 2 cores (2048-d, 120 images): slow
SPACES = [pytest.param("inception", marks=pytest.mark.slow), "radiomics"]


def features_of(space: str, request) -> tuple:
    return request.getfixturevalue(f"{space}_features" if space == "inception" else "radiomic_features")


@pytest.mark.parametrize("space", SPACES)
def test_identical_sets_score_one(space, request):
    real = features_of(space, request)[0]
    measure = prdc if space == "inception" else prdc_radiomics
    for other in (real, real.copy() if space == "inception" else real):
        result = measure(real, other)
        assert result["precision"] == result["recall"] == result["coverage"] == 1.0
        assert result["density"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("space", SPACES)
def test_mode_collapse_loses_recall_and_coverage_not_precision(space, request):
    real, generated, collapsed = features_of(space, request)
    measure = prdc if space == "inception" else prdc_radiomics
    good, stuck = measure(real, generated), measure(real, collapsed)
    # the good generator: realistic and diverse
    assert min(good[key] for key in ("precision", "recall", "coverage")) >= 0.9
    # four modes: every sample realistic, but the real variety not reached
    assert stuck["precision"] >= 0.9
    assert stuck["recall"] <= 0.1 and stuck["coverage"] <= 0.4
    assert stuck["recall"] < good["recall"] - 0.8 and stuck["coverage"] < good["coverage"] - 0.5


def test_protocol_is_recorded():
    rng = np.random.default_rng(2)
    real, generated = rng.normal(size=(30, 8)), rng.normal(size=(20, 8))
    result = prdc(real, generated, space="inception")
    assert result["k"] == DEFAULT_K == 5
    assert (result["n_real"], result["n_generated"], result["dims"], result["space"]) == (30, 20, 8, "inception")
    assert prdc(real, generated, 3)["k"] == 3
    assert all(type(result[key]) is float for key in KEYS)


def test_radiomics_protocol_is_recorded(radiomic_features):
    real, generated, _ = radiomic_features
    result = prdc_radiomics(real, generated, 4)
    assert result["k"] == 4 and result["space"] == "radiomics"
    assert result["n_real"] == result["n_real_used"] == 60 and result["dims"] == result["features_used"] > 300


def test_memory_is_chunked():
    """The real x generated matrix is never held whole: the peak stays well below one full matrix."""
    rng = np.random.default_rng(3)
    real, generated = rng.normal(size=(2000, 32)), rng.normal(size=(2000, 32))
    full = 2000 * 2000 * 8
    tracemalloc.start()
    try:
        prdc(real, generated, chunk=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full / 4, (peak, full)


@pytest.mark.parametrize(
    ("real", "generated", "k", "message"),
    [
        (np.zeros((5, 3)), np.ones((10, 3)), 5, "5 real samples, but k = 5 nearest neighbours need at least 6"),
        (np.ones((10, 3)), np.zeros((3, 3)), 5, "3 generated samples, but k = 5"),
        (np.ones((10, 3)), np.zeros((0, 3)), 5, "0 generated samples"),
        (np.ones((10, 3)), np.zeros((10, 3)), 0, "k must be a whole number >= 1, got 0"),
        (np.ones((10, 3)), np.zeros((10, 3)), 2.5, "k must be a whole number >= 1"),
        (np.ones((10, 3)), np.zeros((10, 4)), 5, "real features have 3 dims, the generated ones 4"),
        (np.ones(10), np.zeros((10, 3)), 5, "must be N x D"),
        (np.full((10, 3), np.nan), np.zeros((10, 3)), 5, "10 of 10 real feature rows hold NaN or Inf"),
    ],
)
def test_errors_are_one_line(real, generated, k, message):
    with pytest.raises(HeartjobsError, match=r"^PRDC \(features\): ") as caught:
        prdc(real, generated, k)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_radiomic_errors_are_one_line():
    good = np.random.default_rng(4).normal(size=(10, 6))
    cases = [
        (np.full((10, 6), np.nan), good, "0 of 10 real images have finite radiomic features"),
        (good, good[:, :5], "the real features have 6 columns, the generated ones 5"),
        (good, np.concatenate([good[:4], np.full((6, 6), np.nan)]), "4 generated samples, but k = 5"),
    ]
    for real, generated, message in cases:
        with pytest.raises(HeartjobsError) as caught:
            prdc_radiomics(real, generated)
        assert message in str(caught.value) and "\n" not in str(caught.value)
