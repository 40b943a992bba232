"""The memorisation test: exact nearest neighbours, a copycat flagged in pixel and Inception space, noise and
a phantom of another seed (a generator that did not copy) not flagged, and the pairs figure a valid PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from heartjobs.data.phantom import Phantom, PhantomParams
from heartjobs.evaluation.memorisation import memorisation, nearest_neighbours, plot_pairs

N_REAL, N_TRAIN, N_GEN = 160, 100, 60


def _slices(n: int, seed: int, size: int = 64) -> np.ndarray:
    phantom = Phantom(PhantomParams(slices=n, size=size, seed=seed))
    return np.stack([(phantom.render_slice(i)[0] / 65535 * 255).round().astype(np.uint8) for i in range(n)])


@pytest.fixture(scope="module")
def sets():
    """Training and held-out slices of one phantom (a random split, as a prepared set's would be), and
    the candidate generators: a copycat (training slices +-2 grey levels), exact copies, uniform noise,
    a phantom of another seed, and a partial copier (a fifth copies, the rest another seed)."""
    rng = np.random.default_rng(0)
    real = _slices(N_REAL, seed=1)
    order = rng.permutation(N_REAL)
    training, held_out = real[order[:N_TRAIN]], real[order[N_TRAIN:]]
    picked = rng.integers(0, N_TRAIN, N_GEN)
    jitter = rng.integers(-2, 3, (N_GEN, 64, 64))
    copycat = np.clip(training[picked].astype(int) + jitter, 0, 255).astype(np.uint8)
    other = _slices(N_GEN, seed=2)
    partial = other.copy()
    partial[: N_GEN // 5] = training[picked[: N_GEN // 5]]
    return {
        "training": training,
        "held_out": held_out,
        "picked": picked,
        "copycat": copycat,
        "copies": training[picked],
        "noise": rng.integers(0, 256, (N_GEN, 64, 64), dtype=np.uint8),
        "other": other,
        "partial": partial,
    }


@pytest.fixture(scope="module")
def inception(sets):
    """Inception features (untrained weights, 64 dims) of every set."""
    from heartjobs.evaluation.inception import FeatureExtractor
    from heartjobs.evaluation.weights import resolve_weights

    extractor = FeatureExtractor(resolve_weights("untrained"), 64, torch.device("cpu"), 50)

    def features(images: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(images)[:, None]
        return extractor.of_batches(iter(tensor.split(50)), len(tensor), "memorisation test")

    return {name: features(sets[name]) for name in ("training", "held_out", "copies", "copycat", "noise", "other")}


def test_nearest_neighbours_equal_brute_force():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (70, 1, 24, 24), dtype=np.uint8)
    queries = images[:30].copy()
    queries[:5] = images[40:45]  # exact copies among the references
    references = images[30:]
    truth = cdist(queries.reshape(30, -1).astype(float), references.reshape(40, -1).astype(float))
    # tiny blocks: the chunking across both queries and references is exercised
    index, distance = nearest_neighbours(queries, references, block_mib=0.01)
    assert np.array_equal(index, truth.argmin(1))
    np.testing.assert_allclose(distance, truth.min(1), rtol=0, atol=1e-9)
    assert np.all(distance[:5] == 0.0) and np.array_equal(index[:5], np.arange(10, 15))
    features = rng.normal(size=(50, 7))
    index, distance = nearest_neighbours(features[:20], features[20:], block_mib=0.0001)
    truth = cdist(features[:20], features[20:])
    assert np.array_equal(index, truth.argmin(1))
    np.testing.assert_allclose(distance, truth.min(1), rtol=1e-12)


def test_copycat_is_flagged_in_pixel_space(sets):
    result = memorisation(sets["copycat"], sets["training"], sets["held_out"])
    assert result["memorised"] and result["fraction_below"] == 1.0
    # held-out baseline: at n = 60 the 1 % quantile is the closest held-out slice, and none is strictly closer
    assert result["threshold"] == result["held_out_quantiles"]["q00"] and result["held_out_fraction_below"] == 0
    assert result["generated_quantiles"]["q50"] < result["held_out_quantiles"]["q00"]
    # the closest pairs name the training slice each copy came from
    for pair in result["pairs"]:
        assert pair["training"] == sets["picked"][pair["generated"]]
    distances = [p["distance"] for p in result["pairs"]]
    assert distances == sorted(distances) and len(distances) == 16
    assert result["n_generated"] == N_GEN and result["protocol"]["min_count"] == 5


def test_exact_copies_and_partial_copier_are_flagged(sets):
    exact = memorisation(sets["copies"], sets["training"], sets["held_out"])
    assert exact["memorised"] and exact["generated_exact_copies"] == N_GEN
    partial = memorisation(sets["partial"], sets["training"], sets["held_out"])
    assert partial["memorised"] and partial["count_below"] == N_GEN // 5


@pytest.mark.parametrize("name", ["noise", "other"])
def test_noise_and_another_phantom_are_not_flagged(sets, name):
    result = memorisation(sets[name], sets["training"], sets["held_out"])
    assert not result["memorised"] and result["count_below"] == 0
    assert result["generated_quantiles"]["q00"] > result["held_out_quantiles"]["q50"]


def test_inception_space(inception):
    """Untrained Inception features: copies flagged (exact and +-2 grey levels: 13 of 60 lie below the
    threshold, above the 5 % rule), noise and the other phantom not."""
    verdict = {
        name: memorisation(inception[name], inception["training"], inception["held_out"], space="inception-64")
        for name in ("copies", "copycat", "noise", "other")
    }
    assert verdict["copies"]["memorised"] and verdict["copies"]["fraction_below"] == 1.0
    assert verdict["copycat"]["memorised"]
    assert not verdict["noise"]["memorised"] and not verdict["other"]["memorised"]
    assert verdict["other"]["space"] == "inception-64" and verdict["other"]["dims"] == 64


def test_non_finite_rows_are_left_out_and_indices_kept():
    rng = np.random.default_rng(5)
    training = rng.normal(size=(40, 5))
    held_out = rng.normal(size=(30, 5))
    generated = np.concatenate([rng.normal(size=(4, 5)), training[[7, 8, 9, 10, 11, 12]]])
    generated[0, 2] = np.nan
    training_with_nan = np.concatenate([np.full((1, 5), np.nan), training])
    result = memorisation(generated, training_with_nan, held_out, pairs=6)
    assert result["n_generated_used"] == 9 and result["n_training_used"] == 40
    assert result["memorised"] and result["count_below"] == 6
    # indices refer to the arrays as given (training shifted by the NaN row)
    assert sorted((p["generated"], p["training"]) for p in result["pairs"]) == [(i, i + 4) for i in range(4, 10)]


def test_pairs_figure_is_a_png(sets, tmp_path):
    from PIL import Image

    result = memorisation(sets["copycat"], sets["training"], sets["held_out"])
    path = plot_pairs(result, sets["copycat"], sets["training"], tmp_path / "run" / "memorisation.png", k=6)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    assert [p.name for p in path.parent.iterdir()] == ["memorisation.png"]  # no temporary file left


def test_bad_inputs_are_refused(sets):
    with pytest.raises(ValueError, match="differ in width"):
        memorisation(sets["copycat"][:, :32], sets["training"], sets["held_out"])
    with pytest.raises(ValueError, match="quantile"):
        memorisation(sets["copycat"], sets["training"], sets["held_out"], quantile=0)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(60, 6))
    before = features.copy()
    memorisation(features[:20], features[20:40], features[40:])
    nearest_neighbours(features[:20], features[20:])
    assert np.array_equal(features, before)


def test_leave_one_out_finds_each_rows_nearest_other_row_and_flags_only_copies():
    rng = np.random.default_rng(0)
    training = rng.integers(0, 255, (60, 16, 16), dtype=np.uint8)
    index, distance = nearest_neighbours(training, training, exclude_self=True, block_mib=0.01)  # several blocks
    rows = training.reshape(60, -1).astype(np.float64)
    brute = np.sqrt(((rows[:, None] - rows[None]) ** 2).sum(-1))
    np.fill_diagonal(brute, np.inf)
    assert (index == brute.argmin(1)).all() and np.allclose(distance, brute.min(1))
    copies = memorisation(training[:20], training, None)
    assert copies["memorised"] and copies["protocol"]["baseline"] == "leave-one-out training slices"
    fresh = memorisation(rng.integers(0, 255, (20, 16, 16), dtype=np.uint8), training, None)
    assert not fresh["memorised"] and fresh["n_held_out"] == 60


def test_the_leave_one_out_baseline_is_searched_once_per_training_set(monkeypatch):
    import heartjobs.evaluation.memorisation as module

    searches = []
    real_search = module.nearest_neighbours
    monkeypatch.setattr(module, "_BASELINES", [])
    monkeypatch.setattr(
        module,
        "nearest_neighbours",
        lambda *a, **k: searches.append(k.get("exclude_self", False)) or real_search(*a, **k),
    )
    rng = np.random.default_rng(1)
    training = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    first = memorisation(training[:10], training, None)
    again = memorisation(rng.integers(0, 255, (10, 8, 8), dtype=np.uint8), training, None)
    assert searches == [False, True, False]  # the second measurement reused the baseline
    assert first["threshold"] == again["threshold"] and first["memorised"] and not again["memorised"]
    memorisation(training[:10], training.copy(), None)  # an equal but other set: searched again
    assert searches[-1] is True
