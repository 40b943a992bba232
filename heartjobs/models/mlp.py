"""The fully connected GAN of the thesis (also WGAN's generator and, without Sigmoid, its critic)."""

from __future__ import annotations

import torch
from torch import nn


class MLPGenerator(nn.Module):
    """latent -> 128 -> 256 -> 512 -> 1024 -> C*H*W, Tanh; BatchNorm1d after every hidden layer but the first."""

    def __init__(self, latent_dim: int, channels: int, size: int, batchnorm_eps: float = 0.8):
        super().__init__()
        self.shape = (channels, size, size)

        def block(n_in: int, n_out: int, normalize: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
            if normalize:
                layers.append(nn.BatchNorm1d(n_out, eps=batchnorm_eps))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *block(latent_dim, 128, normalize=False),
            *block(128, 256),
            *block(256, 512),
            *block(512, 1024),
            nn.Linear(1024, channels * size * size),
            nn.Tanh(),
        )

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
