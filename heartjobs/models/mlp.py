"""The fully connected GAN of the thesis (also WGAN's and WGAN-GP's generator and, without Sigmoid, their
critic), with the generator's hidden widths as a knob (the thesis' 128, 256, 512, 1024 by default)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from heartjobs.models.family import THESIS_HIDDEN, Networks


class MLPGenerator(nn.Module):
    """latent -> hidden... -> C*H*W, Tanh; LeakyReLU(0.2) after every hidden layer and BatchNorm1d before it
    in all but the first. The thesis' hidden widths are 128 -> 256 -> 512 -> 1024; any depth >= 1 builds
    the same pattern (the layers keep their places, so the thesis' state_dict keys and init order hold)."""

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        size: int,
        batchnorm_eps: float = 0.8,
        hidden: tuple[int, ...] = THESIS_HIDDEN,
    ):
        super().__init__()
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden widths must be at least one positive width, got {hidden}")
        self.shape = (channels, size, size)

        def block(n_in: int, n_out: int, normalize: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
            if normalize:
                layers.append(nn.BatchNorm1d(n_out, eps=batchnorm_eps))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        widths = [latent_dim, *hidden]
        layers = [
            layer
            for i, (n_in, n_out) in enumerate(itertools.pairwise(widths))
            for layer in block(n_in, n_out, normalize=i > 0)
        ]
        self.model = nn.Sequential(*layers, nn.Linear(widths[-1], channels * size * size), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    """C*H*W -> 512 -> 256 -> 1 with LeakyReLU(0.2); Sigmoid for the GAN, none for the WGAN critic."""

    def __init__(self, channels: int, size: int, sigmoid: bool = True):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Linear(channels * size * size, 512),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 1),
        ]
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.model = nn.Sequential(*layers)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img.flatten(1))


def mlp_networks(networks: Networks, sigmoid: bool) -> tuple[MLPGenerator, MLPDiscriminator]:
    """The fully connected pair at networks' sizes: the GAN's (sigmoid) or the WGAN critic's (raw scores)."""
    n = networks
    generator = MLPGenerator(n.latent_dim, n.channels, n.size, n.batchnorm_eps, n.hidden_widths)
    return generator, MLPDiscriminator(n.channels, n.size, sigmoid=sigmoid)
