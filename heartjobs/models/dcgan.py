"""The thesis' DCGAN: upsampling convolutional generator, strided convolutional discriminator; with the base
width as a knob (the thesis' 128) and the generator's upsampling mode (the thesis' nearest; SNGAN's
bilinear, see heartjobs.models.sngan)."""

from __future__ import annotations

import torch
from torch import nn

from heartjobs.models.family import THESIS_WIDTH, Networks
from heartjobs.models.gan import step  # DCGAN trains as the thesis GAN does (BCE, generator first)

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "build", "step"]


def init_weights(module: nn.Module) -> None:
    """The reference init: conv weights N(0, 0.02); BatchNorm2d weights N(1, 0.02), biases 0.
    Linear layers and conv biases keep PyTorch's defaults, as in the reference code."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def upsample(mode: str) -> nn.Upsample:
    """x2 resize: "nearest" (the thesis') copies each value into a 2 x 2 block; "bilinear" interpolates."""
    if mode == "nearest":
        return nn.Upsample(scale_factor=2)
    return nn.Upsample(scale_factor=2, mode=mode, align_corners=False)


class DCGANGenerator(nn.Module):
    """Linear -> width x H/4 x W/4 -> BatchNorm2d -> (x2 resize, 3x3 conv, BatchNorm2d, LeakyReLU) twice,
    to width then width/2 channels -> 3x3 conv -> Tanh. The thesis: width 128, nearest-neighbour resize."""

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        size: int,
        batchnorm_eps: float = 0.8,
        width: int = THESIS_WIDTH,
        upsampling: str = "nearest",
    ):
        super().__init__()
        self.init_size = size // 4
        self.width = width
        self.l1 = nn.Linear(latent_dim, width * self.init_size**2)
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(width),  # the one BatchNorm with the standard eps in the reference code
            upsample(upsampling),
            nn.Conv2d(width, width, 3, stride=1, padding=1),
            nn.BatchNorm2d(width, eps=batchnorm_eps),
            nn.LeakyReLU(0.2, inplace=True),
            upsample(upsampling),
            nn.Conv2d(width, width // 2, 3, stride=1, padding=1),
            nn.BatchNorm2d(width // 2, eps=batchnorm_eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width // 2, channels, 3, stride=1, padding=1),
            nn.Tanh(),
        )
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        return self.conv_blocks(out)


class DCGANDiscriminator(nn.Module):
    """Four blocks Conv2d(3x3, stride 2) -> LeakyReLU(0.2) -> Dropout2d(0.25) -> BatchNorm2d (none in the
    first) with width/8, /4, /2 and width channels (16, 32, 64, 128 in the thesis), then Linear -> Sigmoid."""

    def __init__(self, channels: int, size: int, batchnorm_eps: float = 0.8, width: int = THESIS_WIDTH):
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
            *block(channels, width // 8, bn=False),
            *block(width // 8, width // 4),
            *block(width // 4, width // 2),
            *block(width // 2, width),
        )
        ds_size = size // 2**4
        self.adv_layer = nn.Sequential(nn.Linear(width * ds_size**2, 1), nn.Sigmoid())
        self.apply(init_weights)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.adv_layer(self.model(img).flatten(1))


def build(networks: Networks) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    n = networks
    generator = DCGANGenerator(n.latent_dim, n.channels, n.size, n.batchnorm_eps, n.base_width)
    return generator, DCGANDiscriminator(n.channels, n.size, n.batchnorm_eps, n.base_width)
