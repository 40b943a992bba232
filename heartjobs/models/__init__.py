"""The thesis' three models (GAN, WGAN, DCGAN) for any power-of-two image size."""

from __future__ import annotations

from torch import nn

from heartjobs.models.dcgan import DCGANDiscriminator, DCGANGenerator
from heartjobs.models.mlp import MLPDiscriminator, MLPGenerator


def build_models(
    model: str, size: int, channels: int, latent_dim: int, batchnorm_eps: float = 0.8
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) of `model` ("gan", "wgan" or "dcgan"), freshly initialised."""
    if model in ("gan", "wgan"):
        generator = MLPGenerator(latent_dim, channels, size, batchnorm_eps)
        # The WGAN critic is the GAN discriminator without its Sigmoid.
        discriminator = MLPDiscriminator(channels, size, sigmoid=model == "gan")
        return generator, discriminator
    if model == "dcgan":
        return DCGANGenerator(latent_dim, channels, size, batchnorm_eps), DCGANDiscriminator(
            channels, size, batchnorm_eps
        )
    raise ValueError(f"unknown model {model!r}")


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (BatchNorm running buffers are buffers, not parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
