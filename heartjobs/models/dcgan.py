"""The thesis' DCGAN: upsampling convolutional generator, strided convolutional discriminator."""

from __future__ import annotations

import torch
from torch import nn


def init_weights(module: nn.Module) -> None:
    """The reference init: conv weights N(0, 0.02); BatchNorm2d weights N(1, 0.02), biases 0.
    Linear layers and conv biases keep PyTorch's defaults, as in the reference code."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, size: int, batchnorm_eps: float = 0.8):
        super().__init__()
        self.init_size = size // 4
        self.l1 = nn.Linear(latent_dim, 128 * self.init_size**2)
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(128),  # the one BatchNorm with the standard eps in the reference code
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, stride=1, padding=1),
            nn.BatchNorm2d(128, eps=batchnorm_eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, stride=1, padding=1),
            nn.BatchNorm2d(64, eps=batchnorm_eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, channels, 3, stride=1, padding=1),
            nn.Tanh(),
        )
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z).view(z.shape[0], 128, self.init_size, self.init_size)
        return self.conv_blocks(out)


class DCGANDiscriminator(nn.Module):
    def __init__(self, channels: int, size: int, batchnorm_eps: float = 0.8):
        super().__init__()

        def block(n_in: int, n_out: int, bn: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(n_in, n_out, 3, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Dropout2d(0.25),
            ]
            if bn:
                layers.append(nn.BatchNorm2d(n_out, eps=batchnorm_eps))
            return layers

        self.model = nn.Sequential(
            *block(channels, 16, bn=False),
            *block(16, 32),
            *block(32, 64),
            *block(64, 128),
        )
        ds_size = size // 2**4
        self.adv_layer = nn.Sequential(nn.Linear(128 * ds_size**2, 1), nn.Sigmoid())
        self.apply(init_weights)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.adv_layer(self.model(img).flatten(1))
