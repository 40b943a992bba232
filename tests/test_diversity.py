"""MS-SSIM diversity (heartjobs.evaluation.diversity): equal to pytorch-msssim's own ms_ssim on the same pairs
with the same settings, 1 for identical images, far above the real phantom slices for a collapsed set and far
below them for noise, at 32, 64 and 256 px, and one-line errors for what it cannot measure."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
import pytorch_msssim
import torch

from heartjobs.data.phantom import Phantom, PhantomParams
from heartjobs.errors import HeartjobsError
from heartjobs.evaluation import diversity


def _phantom(size: int, n: int = 24, seed: int = 3) -> np.ndarray:
    """n uint8 slices of the phantom, spread over the stack, as heartjobs quantizes them (N x H x W)."""
    phantom = Phantom(PhantomParams(slices=n, size=size, seed=seed))
    slices = np.stack([phantom.render_slice(i)[0] for i in range(n)])
    return np.round(slices / 65535 * 255).astype(np.uint8)


def _collapsed(real: np.ndarray, seed: int = 0) -> np.ndarray:
    """One real slice repeated, each copy with +-2 grey levels of noise: a mode-collapsed generator."""
    noise = np.random.default_rng(seed).integers(-2, 3, size=real.shape)
    return np.clip(real[[len(real) // 2] * len(real)].astype(int) + noise, 0, 255).astype(np.uint8)


def _noise(real: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=real.shape, dtype=np.uint8)


def _unasserted_ms_ssim():
    """pytorch-msssim's ms_ssim compiled from its own source with assertions stripped (as `python -O` runs it):
    the package's code line for line, without the 5-scale size assertion that refuses images under 161 px."""
    module = importlib.import_module("pytorch_msssim.ssim")  # the attribute pytorch_msssim.ssim is the function
    namespace = {"__name__": "pytorch_msssim_unasserted"}
    exec(compile(inspect.getsource(module), module.__file__, "exec", optimize=1), namespace)  # noqa: S102
    return namespace["ms_ssim"]


def _reference_mean(ms_ssim, images: np.ndarray, pairs: int, seed: int, stream: int, **settings) -> float:
    """The mean over the same pairs, with ms_ssim called directly on N x 1 x H x W float32 pairs."""
    i, j, _ = diversity.draw_pairs(len(images), pairs, np.random.default_rng([seed, stream]))
    x = torch.from_numpy(images)[:, None].float()
    values = ms_ssim(x[i], x[j], data_range=255, size_average=False, **settings)
    return float(values.mean())


def test_the_rule_fits_the_image_size():
    """11-tap window, the most scales whose coarsest image is one window wide; pytorch-msssim's default at 256."""
    assert {s: diversity.scales_for(s, s) for s in (11, 21, 32, 64, 128, 160, 161, 256, 512)} == {
        11: 1, 21: 2, 32: 2, 64: 3, 128: 4, 160: 4, 161: 5, 256: 5, 512: 5,
    }  # fmt: skip
    # 161 px is the smallest size pytorch-msssim's own assertion accepts: the rule agrees with it there.
    assert diversity.weights_for(5) == [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    for scales in (1, 2, 3, 4):
        weights = diversity.weights_for(scales)
        assert sum(weights) == pytest.approx(1.0, abs=1e-12)
        assert np.allclose(np.array(weights) / weights[0], np.array(diversity.REFERENCE_WEIGHTS[:scales]) / 0.0448)
    with pytest.raises(HeartjobsError, match="at least 11 px"):
        diversity.scales_for(10, 64)


def test_equals_pytorch_msssim_at_256_px():
    """At 256 px the rule is ms_ssim's default (window 11, five reference weights): the package's public
    function on the same pairs gives the same mean, and per pair the same values, to 1e-6."""
    real = _phantom(256, n=8)
    result = diversity.mean_pairwise_ms_ssim(real, pairs=12, seed=5)
    assert result["protocol"]["scales"] == 5 and result["protocol"]["pairs_mode"] == "sampled"
    assert abs(result["mean"] - _reference_mean(pytorch_msssim.ms_ssim, real, 12, 5, 0)) < 1e-6
    # The cut weights through the package's public function too (3 scales of a 256 px image are allowed).
    i, j, _ = diversity.draw_pairs(8, 12, np.random.default_rng([5, 0]))
    x = torch.from_numpy(real)[:, None].float()
    ours = diversity.ms_ssim_of_pairs(x[i], x[j], 3)
    reference = pytorch_msssim.ms_ssim(x[i], x[j], data_range=255, size_average=False, weights=diversity.weights_for(3))
    assert torch.max(torch.abs(ours - reference)) < 1e-6


@pytest.mark.parametrize("size", [32, 64])
def test_equals_pytorch_msssim_below_its_size_limit(size):
    """At 32 and 64 px ms_ssim refuses the call by assertion alone; run without it, on the same pairs and with
    the rule's window and weights, it gives what heartjobs gives, to 1e-6."""
    real = _phantom(size)
    result = diversity.mean_pairwise_ms_ssim(real, pairs=100, seed=2, stream=1)
    with pytest.raises(AssertionError, match="Image size should be larger than 160"):
        _reference_mean(pytorch_msssim.ms_ssim, real, 100, 2, 1, weights=result["protocol"]["weights"])
    reference = _reference_mean(_unasserted_ms_ssim(), real, 100, 2, 1, weights=result["protocol"]["weights"])
    assert abs(result["mean"] - reference) < 1e-6


def test_identical_images_give_one():
    real = _phantom(64, n=6)
    same = np.repeat(real[:1], 6, axis=0)
    result = diversity.mean_pairwise_ms_ssim(same, pairs=50)
    assert result["mean"] == pytest.approx(1.0, abs=1e-6) and result["std"] < 1e-6
    x = torch.from_numpy(real)[:, None].float()
    assert torch.allclose(diversity.ms_ssim_of_pairs(x, x, 3), torch.ones(6), atol=1e-6)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_collapse_scores_far_above_the_real_slices_and_noise_far_below(size):
    """The mode-collapse check: one slice repeated with tiny noise is near 1 and far above the real phantom
    slices (0.26-0.28 here: ratios 3.5-3.9), uniform noise far below them (0.03-0.08: ratios 0.09-0.31)."""
    n, pairs = (24, 200) if size < 256 else (16, 60)
    real = _phantom(size, n=n)
    collapsed = diversity.ms_ssim_diversity(_collapsed(real), real, pairs=pairs, seed=1)
    noise = diversity.ms_ssim_diversity(_noise(real), real, pairs=pairs, seed=1)
    assert 0.15 < collapsed["ms_ssim_real"] < 0.6
    assert collapsed["ms_ssim_generated"] > 0.99
    assert collapsed["ms_ssim_ratio"] > 1.6
    assert noise["ms_ssim_generated"] < 0.12
    assert noise["ms_ssim_ratio"] < 0.4
    assert noise["ms_ssim_real"] == collapsed["ms_ssim_real"]  # the real pairs do not depend on the other set
    protocol = collapsed["protocol"]
    assert protocol["scales"] == diversity.scales_for(size, size) and protocol["window"] == 11
    assert protocol["data_range"] == 255 and protocol["seed"] == 1
    assert protocol["generated"] == {"n": n, "pairs": pairs, "pairs_mode": "sampled", "stream": 0}
    assert protocol["real"] == {"n": n, "pairs": pairs, "pairs_mode": "sampled", "stream": 1}


def test_pairs_are_distinct_seeded_and_batch_free():
    real = _phantom(64)
    i, j, mode = diversity.draw_pairs(100, 2000, np.random.default_rng(0))  # of 4950 unordered pairs
    assert mode == "sampled" and len(i) == 2000 and not np.any(i == j)
    assert set(i) == set(j) == set(range(100))  # j skips i yet reaches every image
    first = diversity.mean_pairwise_ms_ssim(real, pairs=100, seed=4)
    assert diversity.mean_pairwise_ms_ssim(real, pairs=100, seed=4, batch=7)["mean"] == pytest.approx(
        first["mean"], abs=1e-7
    )
    assert diversity.mean_pairwise_ms_ssim(real, pairs=100, seed=5)["mean"] != first["mean"]
    # Asking for at least every unordered pair takes each once: the exact mean, whatever the seed.
    every = diversity.mean_pairwise_ms_ssim(real[:6], pairs=1000, seed=4)
    assert every["protocol"]["pairs"] == 15 and every["protocol"]["pairs_mode"] == "all"
    assert every["mean"] == diversity.mean_pairwise_ms_ssim(real[:6], pairs=15, seed=9)["mean"]
    # N x 1 x H x W torch uint8, as the metric driver streams generated images, gives the same.
    as_torch = diversity.mean_pairwise_ms_ssim(torch.from_numpy(real)[:, None], pairs=100, seed=4)
    assert as_torch["mean"] == first["mean"]


def test_what_it_cannot_measure_is_one_line():
    real = _phantom(32, n=4)
    cases = [
        (lambda: diversity.ms_ssim_diversity(real[:1], real), "generated images: .* at least 2 images .* got 1"),
        (lambda: diversity.ms_ssim_diversity(real, real[:0]), "real images: .* at least 2 images .* got 0"),
        (lambda: diversity.ms_ssim_diversity(real.astype(np.float32), real), "uint8 images .* got torch.float32"),
        (lambda: diversity.ms_ssim_diversity(real, _phantom(64, n=4)), r"generated images are \[32, 32\]"),
        (lambda: diversity.ms_ssim_diversity(real[:, :8], real[:, :8]), "at least 11 px"),
        (lambda: diversity.ms_ssim_diversity(real[None], real[None]), "N x H x W"),
        (lambda: diversity.ms_ssim_diversity(real, real, pairs=0), "at least 1 pair"),
    ]
    for call, message in cases:
        with pytest.raises(HeartjobsError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
