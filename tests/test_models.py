"""The thesis' architectures: exact parameter counts, shapes, init, and real steps at 256 px; the two models
beyond it (WGAN-GP, SNGAN) and the width knobs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heartjobs.models import build_models, count_parameters
from heartjobs.training.loop import batch_bounds

# REFERENCE.md: trainable parameters at 256 x 256 x 1.
GENERATOR_COUNTS = {
    ("gan", 50): 67_874_432,
    ("gan", 100): 67_880_832,
    ("gan", 200): 67_893_632,
    ("wgan", 50): 67_874_432,
    ("wgan", 100): 67_880_832,
    ("wgan", 200): 67_893_632,
    ("dcgan", 50): 26_961_281,
    ("dcgan", 100): 53_175_681,
    ("dcgan", 200): 105_604_481,
}
DISCRIMINATOR_COUNTS = {"gan": 33_686_529, "wgan": 33_686_529, "dcgan": 130_369}
# Beyond the thesis, at 256 x 256 x 1, computed with build_models and pinned: WGAN-GP has WGAN's networks;
# SNGAN's generator is DCGAN's (bilinear resizes have no weights) and its discriminator DCGAN's blocks with
# 4x4 instead of 3x3 kernels, without BatchNorm (spectral norm's vectors are buffers, not parameters).
BEYOND_COUNTS = {
    ("wgan_gp", 50): (67_874_432, 33_686_529),
    ("wgan_gp", 100): (67_880_832, 33_686_529),
    ("wgan_gp", 200): (67_893_632, 33_686_529),
    ("sngan", 50): (26_961_281, 205_297),
    ("sngan", 100): (53_175_681, 205_297),
    ("sngan", 200): (105_604_481, 205_297),
}


def _on_meta(model: str, latent: int) -> tuple[nn.Module, nn.Module]:
    """The networks at 256 px on the meta device: shapes without memory or arithmetic, so counting the
    parameters of 100 MB networks takes milliseconds (the forward and backward tests below build them for
    real)."""
    with torch.device("meta"):
        return build_models(model, 256, 1, latent)


@pytest.mark.parametrize(("model", "latent"), list(GENERATOR_COUNTS))
def test_parameter_counts_at_256_px_match_the_thesis(model, latent):
    generator, discriminator = _on_meta(model, latent)
    assert count_parameters(generator) == GENERATOR_COUNTS[(model, latent)]
    assert count_parameters(discriminator) == DISCRIMINATOR_COUNTS[model]


@pytest.mark.parametrize(("model", "latent"), list(BEYOND_COUNTS))
def test_parameter_counts_at_256_px_beyond_the_thesis(model, latent):
    generator, discriminator = _on_meta(model, latent)
    counts = (count_parameters(generator), count_parameters(discriminator))
    print(f"{model}, latent {latent}, 256 px: generator {counts[0]:,}, discriminator {counts[1]:,}")
    assert counts == BEYOND_COUNTS[(model, latent)]


@pytest.mark.parametrize("model", ["wgan_gp", "sngan"])
def test_the_new_models_forward_and_backward_at_256_px_with_unbounded_scores(model):
    torch.manual_seed(0)
    generator, discriminator = build_models(model, 256, 1, 100)
    images = generator(torch.randn(2, 100))
    assert images.shape == (2, 1, 256, 256) and images.min() >= -1 and images.max() <= 1
    score = discriminator(images)
    assert score.shape == (2, 1)
    assert not any(isinstance(m, nn.Sigmoid | nn.BatchNorm2d | nn.BatchNorm1d) for m in discriminator.modules())
    score.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in generator.parameters())


def test_hidden_widths_and_base_width_shape_the_networks():
    from heartjobs.models.dcgan import THESIS_WIDTH
    from heartjobs.models.mlp import THESIS_HIDDEN
    from heartjobs.spec.defaults import ARCHITECTURE_DEFAULTS

    assert (ARCHITECTURE_DEFAULTS["hidden"], ARCHITECTURE_DEFAULTS["width"]) == (THESIS_HIDDEN, THESIS_WIDTH)

    def linears(module):
        return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]

    def convs(module):
        return [(m.in_channels, m.out_channels) for m in module.modules() if isinstance(m, nn.Conv2d)]

    thesis, _ = build_models("gan", 32, 1, 8)
    assert linears(thesis) == [(8, 128), (128, 256), (256, 512), (512, 1024), (1024, 1024)]
    spelled_out, _ = build_models("gan", 32, 1, 8, hidden=(128, 256, 512, 1024))
    assert spelled_out.state_dict().keys() == thesis.state_dict().keys()  # the same layers in the same places
    shallow, _ = build_models("wgan_gp", 32, 1, 8, hidden=(64,))
    assert linears(shallow) == [(8, 64), (64, 1024)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in shallow.modules())  # the first layer has none
    deep, critic = build_models("gan", 32, 1, 8, hidden=(16, 32, 64, 128, 256))
    assert linears(deep) == [(8, 16), (16, 32), (32, 64), (64, 128), (128, 256), (256, 1024)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in deep.modules()) == 4
    assert linears(critic) == [(1024, 512), (512, 256), (256, 1)]  # the discriminator stays the thesis'
    assert deep(torch.randn(3, 8)).shape == (3, 1, 32, 32)

    for model in ("dcgan", "sngan"):
        generator, discriminator = build_models(model, 32, 1, 8, width=64)
        assert convs(generator) == [(64, 64), (64, 32), (32, 1)]
        assert convs(discriminator) == [(1, 8), (8, 16), (16, 32), (32, 64)]
        assert discriminator(generator(torch.randn(3, 8))).shape == (3, 1)
        default, _ = build_models(model, 32, 1, 8)
        assert convs(default) == [(128, 128), (128, 64), (64, 1)]


@pytest.mark.parametrize("model", ["gan", "wgan", "dcgan"])
def test_one_forward_and_backward_at_256_px(model):
    torch.manual_seed(0)
    generator, discriminator = build_models(model, 256, 1, 100)
    images = generator(torch.randn(2, 100))
    assert images.shape == (2, 1, 256, 256)
    assert images.min() >= -1 and images.max() <= 1
    score = discriminator(images)
    assert score.shape == (2, 1)
    if model == "wgan":
        assert not isinstance(discriminator.model[-1], nn.Sigmoid)  # a critic: unbounded scores
    else:
        assert score.min() >= 0 and score.max() <= 1
    score.mean().backward()
    grads = [p.grad for p in generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("model", ["gan", "wgan", "dcgan", "wgan_gp", "sngan"])
def test_any_power_of_two_size(model, size):
    generator, discriminator = build_models(model, size, 1, 8)
    out = generator(torch.randn(3, 8))
    assert out.shape == (3, 1, size, size) and discriminator(out).shape == (3, 1)


def test_batchnorm_eps_quirk_is_kept_by_default_and_can_be_corrected():
    quirky, _ = build_models("gan", 32, 1, 8)
    eps = {m.eps for m in quirky.modules() if isinstance(m, nn.BatchNorm1d)}
    assert eps == {0.8}
    standard, _ = build_models("gan", 32, 1, 8, batchnorm_eps=1e-5)
    assert {m.eps for m in standard.modules() if isinstance(m, nn.BatchNorm1d)} == {1e-5}
    generator, discriminator = build_models("dcgan", 32, 1, 8)
    bn = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [m.eps for m in bn] == [1e-5, 0.8, 0.8]  # the first BatchNorm2d has the standard eps
    assert {m.eps for m in discriminator.modules() if isinstance(m, nn.BatchNorm2d)} == {0.8}


def test_dcgan_init():
    torch.manual_seed(0)
    generator, discriminator = build_models("dcgan", 64, 1, 100)
    conv_weights = torch.cat([m.weight.flatten() for m in generator.modules() if isinstance(m, nn.Conv2d)])
    assert abs(conv_weights.std().item() - 0.02) < 0.002 and abs(conv_weights.mean().item()) < 0.002
    bn = [m for m in discriminator.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight for m in bn])
    assert abs(weights.mean().item() - 1) < 0.01 and 0.005 < weights.std().item() < 0.04
    assert all(torch.all(m.bias == 0) for m in bn)


def test_batches_cover_every_image_and_never_leave_a_batch_of_one():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]  # the lone last image joins the batch before it
    assert batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert batch_bounds(3307, 64)[-1] == (3264, 3307)
