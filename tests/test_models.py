"""The thesis' architectures: exact parameter counts, shapes, init, and real steps at 256 px."""

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


@pytest.mark.parametrize(("model", "latent"), list(GENERATOR_COUNTS))
def test_parameter_counts_at_256_px_match_the_thesis(model, latent):
    generator, discriminator = build_models(model, 256, 1, latent)
    assert count_parameters(generator) == GENERATOR_COUNTS[(model, latent)]
    assert count_parameters(discriminator) == DISCRIMINATOR_COUNTS[model]


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
@pytest.mark.parametrize("model", ["gan", "wgan", "dcgan"])
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
