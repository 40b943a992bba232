"""The model families, declared once: the thesis' three (GAN, WGAN, DCGAN) and three beyond it (WGAN-GP,
SNGAN, StyleGAN2-ADA). The spec's model choices, defaults and per-model key checks, the trainer's step and every network
build are derived from FAMILIES. Adding a family is one module (its networks, `build` and `step`) and one
entry here (docs/development.md, "Adding a model").

Torch-free: a family's module is imported only when its networks are built or trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from heartjobs.models.family import ModelFamily, Networks

if TYPE_CHECKING:
    from torch import nn

# The thesis' hyperparameters (the PyTorch-GAN reference implementations) for its three; beyond it, each
# model with its paper's settings.
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily(
            name="gan",
            summary="the thesis' fully connected GAN (BCE loss)",
            thesis=True,
            module="heartjobs.models.gan",
            defaults={"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999)},
            knobs=("hidden",),
            convolutional=False,
            ada_signal="probability",  # a sigmoid output
        ),
        ModelFamily(
            name="wgan",
            summary="the thesis' WGAN: the GAN's networks as a critic with weight clipping, RMSprop",
            thesis=True,
            module="heartjobs.models.wgan",
            defaults={"optimizer": "rmsprop", "lr": 5e-5, "n_critic": 5, "clip_value": 0.01},
            knobs=("hidden",),
            convolutional=False,
            ada_signal=None,  # a critic
        ),
        ModelFamily(
            name="dcgan",
            summary="the thesis' DCGAN (upsampling convolutions, BCE loss)",
            thesis=True,
            module="heartjobs.models.dcgan",
            defaults={"optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999)},
            knobs=("width",),
            convolutional=True,
            ada_signal="probability",
            upsample_conv=True,  # nearest x2 resizes, each followed by a 3x3 convolution
        ),
        # Gulrajani et al. 2017, Algorithm 1: Adam (0.0, 0.9) at 1e-4, 5 critic steps per generator step,
        # penalty weight 10.
        ModelFamily(
            name="wgan_gp",
            summary="WGAN with the gradient penalty instead of clipping (Gulrajani et al. 2017)",
            thesis=False,
            module="heartjobs.models.wgan_gp",
            defaults={"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "gp_lambda": 10.0},
            knobs=("hidden",),
            convolutional=False,
            ada_signal=None,
        ),
        # Miyato et al. 2018: Adam (0.0, 0.9) at 2e-4 as in its hinge-loss experiments, with one
        # discriminator step per generator step (the thesis DCGAN's schedule, so the two differ in the
        # discriminator and the loss only).
        ModelFamily(
            name="sngan",
            summary="the DCGAN generator with bilinear resizes, a spectrally normalised discriminator, hinge loss",
            thesis=False,
            module="heartjobs.models.sngan",
            defaults={"optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9)},
            knobs=("width",),
            convolutional=True,
        ),
        # Karras et al. 2020 (NVlabs/stylegan2-ada-pytorch d72cc7d), its paper256 configuration: batch 64, lr
        # 0.0025, Adam (0, 0.99), R1 gamma 1, EMA half-life 20 kimg without ramp-up, style mixing 0.9,
        # path length weight 2; z and w 512-d; ADA towards r_t 0.6 (heartjobs.training.ada).
        ModelFamily(
            name="stylegan2",
            summary="StyleGAN2 with adaptive discriminator augmentation (Karras et al. 2020), paper256",
            thesis=False,
            module="heartjobs.models.stylegan2.family",
            defaults={
                "optimizer": "adam",
                "lr": 0.0025,
                "betas": (0.0, 0.99),
                "batch_size": 64,
                "latent_dim": 512,
                "augment": "ada",
                "r1_gamma": 1.0,
                "pl_weight": 2.0,
                "style_mixing": 0.9,
                "ema_kimg": 20.0,
                "ema_rampup": 0.0,
            },
            knobs=("channel_base", "channel_max", "mapping_layers", "mbstd_group"),
            convolutional=True,
            channels_last=False,  # grouped modulated convolutions: not measured in NHWC
            reg_intervals=(4, 16),  # path length every 4 minibatches, R1 every 16
            precision_switches=False,  # its step runs mapping and synthesis apart (mixed precision: a later switch)
        ),
    )
}
MODELS: tuple[str, ...] = tuple(FAMILIES)


def build_networks(networks: Networks) -> tuple[nn.Module, nn.Module]:
    """The one network build: (generator, discriminator) of networks.model, freshly initialised."""
    if networks.model not in FAMILIES:
        raise ValueError(f"unknown model {networks.model!r}; use one of {', '.join(MODELS)}")
    return FAMILIES[networks.model].build(networks)


def build_models(
    model: str,
    size: int,
    channels: int,
    latent_dim: int,
    batchnorm_eps: float = 0.8,
    hidden: tuple[int, ...] | None = None,
    width: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """build_networks with the values spelled out (tests and benchmarks build networks by hand)."""
    hidden = None if hidden is None else tuple(hidden)
    return build_networks(Networks(model, size, channels, latent_dim, batchnorm_eps, hidden, width))


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (BatchNorm running buffers and spectral norm's power-iteration vectors are
    buffers, not parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["FAMILIES", "MODELS", "ModelFamily", "Networks", "build_models", "build_networks", "count_parameters"]
