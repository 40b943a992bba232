"""SNGAN (Miyato et al. 2018) on the thesis' DCGAN: a spectrally normalised discriminator, a resize-convolution
generator with bilinear upsampling.

Where the thesis DCGAN's checkerboard (its Figures 9-11) comes from. Its generator has no transposed
convolution: it already resizes and convolves, as Odena et al. (2016) advise, and the thesis remarks that
the artefacts came anyway. Two period-2 sources remain, and this model removes both:

- The discriminator's 3x3 convolutions with stride 2. Their backward pass, the gradient the generator
  learns from, is a transposed 3x3 convolution with stride 2, which overlaps unevenly (3 is odd): in each
  axis, every other input pixel is reached by two taps and the others by one, so the gradient reaching the
  generator's output is modulated by a 2 x 2 pattern (Odena et al., "Artifacts in Gradients").
  tests/test_beyond.py measures it on the untrained networks. Here the strided convolutions are 4x4 (as in
  the SNGAN paper's CNN discriminator): every pixel is reached by two taps in each axis.
- Nearest-neighbour upsampling copies each value into a 2 x 2 block, so what the next 3x3 convolution sees
  is piecewise constant on a 2-pixel grid, and the last upsampling is followed by two convolutions only.
  Bilinear upsampling interpolates instead (itself an evenly overlapping, fixed smoothing kernel).

The discriminator has no BatchNorm and no Dropout: spectral normalisation bounds each layer's Lipschitz
constant, which per-batch statistics would undo, and the paper's discriminator has neither. No Sigmoid:
the hinge loss takes raw scores. The generator keeps the thesis' BatchNorm2d layers, as the paper's does.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from heartjobs.models.dcgan import THESIS_WIDTH, DCGANGenerator, init_weights
from heartjobs.models.family import Networks, StepContext


def sngan_generator(
    latent_dim: int, channels: int, size: int, batchnorm_eps: float = 0.8, width: int = THESIS_WIDTH
) -> DCGANGenerator:
    """The thesis DCGAN generator with bilinear resizes instead of nearest-neighbour ones."""
    return DCGANGenerator(latent_dim, channels, size, batchnorm_eps, width, upsampling="bilinear")


class SNDiscriminator(nn.Module):
    """Four blocks spectral_norm(Conv2d(4x4, stride 2, padding 1)) -> LeakyReLU(0.2), with width/8, /4, /2 and
    width channels (the thesis DCGAN's 16, 32, 64, 128 at its width), then spectral_norm(Linear) -> a raw score.

    Each normalised weight is divided by its largest singular value (of the weight reshaped to 2-D, out x
    in*k*k), estimated by one power iteration per forward pass in training mode; the estimate's vectors are
    buffers, so they are checkpointed with the weights."""

    def __init__(self, channels: int, size: int, width: int = THESIS_WIDTH):
        super().__init__()
        widths = [channels, width // 8, width // 4, width // 2, width]
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.model = nn.Sequential(*layers)
        ds_size = size // 2**4
        self.adv_layer = nn.Linear(width * ds_size**2, 1)
        # the DCGAN init first, on the plain weights: once parametrized, .weight is computed from them
        self.apply(init_weights)
        for module in list(self.modules()):  # (spectral_norm adds modules: not while iterating them)
            if isinstance(module, nn.Conv2d | nn.Linear):
                spectral_norm(module)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.adv_layer(self.model(img).flatten(1))


def build(networks: Networks) -> tuple[DCGANGenerator, SNDiscriminator]:
    n = networks
    return sngan_generator(n.latent_dim, n.channels, n.size, n.batchnorm_eps, n.base_width), SNDiscriminator(
        n.channels, n.size, n.base_width
    )


def step(ctx: StepContext, real: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The hinge loss in the reference updater's order, which is also the thesis GAN's: the generator first
    (-D(G(z))), then the discriminator (relu(1 - D(x)) + relu(1 + D(G(z)))) on the same generated batch."""
    z = ctx.noise(real.shape[0])
    ctx.opt_G.zero_grad(set_to_none=True)
    generated = ctx.generate(z)
    g_loss = -torch.mean(ctx.score(generated))
    g_loss.backward()
    ctx.opt_G.step()

    ctx.opt_D.zero_grad(set_to_none=True)
    real_scores = ctx.score(real)
    ctx.observe_real(real_scores)  # ADA's overfitting signal (nothing without it)
    d_loss = F.relu(1 - real_scores).mean() + F.relu(1 + ctx.score(generated.detach())).mean()
    d_loss.backward()
    ctx.opt_D.step()
    return d_loss.detach(), g_loss.detach()
