"""The thesis' three models (GAN, WGAN, DCGAN) and two beyond it (WGAN-GP, SNGAN), for any power-of-two
image size, with the generator's widths as knobs."""

from __future__ import annotations

from torch import nn

from heartjobs.models.dcgan import THESIS_WIDTH, DCGANDiscriminator, DCGANGenerator
from heartjobs.models.mlp import THESIS_HIDDEN, MLPDiscriminator, MLPGenerator
from heartjobs.models.sngan import SNDiscriminator, sngan_generator


def build_models(
    model: str,
    size: int,
    channels: int,
    latent_dim: int,
    batchnorm_eps: float = 0.8,
    hidden: tuple[int, ...] | None = None,
    width: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) of `model` ("gan", "wgan", "dcgan", "wgan_gp" or "sngan"), freshly
    initialised; hidden (the fully connected generator's widths) and width (the convolutional models' base
    width) default to the thesis' values."""
    hidden = THESIS_HIDDEN if hidden is None else tuple(hidden)
    width = THESIS_WIDTH if width is None else width
    if model in ("gan", "wgan", "wgan_gp"):
        generator = MLPGenerator(latent_dim, channels, size, batchnorm_eps, hidden)
        # The WGAN and WGAN-GP critic is the GAN discriminator without its Sigmoid.
        discriminator = MLPDiscriminator(channels, size, sigmoid=model == "gan")
        return generator, discriminator
    if model == "dcgan":
        return DCGANGenerator(latent_dim, channels, size, batchnorm_eps, width), DCGANDiscriminator(
            channels, size, batchnorm_eps, width
        )
    if model == "sngan":
        return sngan_generator(latent_dim, channels, size, batchnorm_eps, width), SNDiscriminator(channels, size, width)
    raise ValueError(f"unknown model {model!r}")


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (BatchNorm running buffers and spectral norm's power-iteration vectors are
    buffers, not parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
