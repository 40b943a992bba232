"""The thesis' GAN: the fully connected networks (heartjobs.models.mlp) with a Sigmoid discriminator, trained
with binary cross-entropy, generator first (the PyTorch-GAN reference's order). DCGAN trains the same way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from heartjobs.models.family import Networks, StepContext
from heartjobs.models.mlp import MLPDiscriminator, MLPGenerator, mlp_networks


def build(networks: Networks) -> tuple[MLPGenerator, MLPDiscriminator]:
    return mlp_networks(networks, sigmoid=True)


def step(ctx: StepContext, real: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generator first, BCE against "real"; then the discriminator on the real batch and the same generated one."""
    valid, fake = ctx.labels(real.shape[0])
    z = ctx.noise(real.shape[0])
    ctx.opt_G.zero_grad(set_to_none=True)
    generated = ctx.generate(z)
    g_loss = F.binary_cross_entropy(ctx.score(generated), valid)
    g_loss.backward()
    ctx.opt_G.step()

    ctx.opt_D.zero_grad(set_to_none=True)
    real_scores = ctx.score(real)
    ctx.observe_real(real_scores)  # ADA's overfitting signal (nothing without it)
    real_loss = F.binary_cross_entropy(real_scores, valid)
    fake_loss = F.binary_cross_entropy(ctx.score(generated.detach()), fake)
    d_loss = (real_loss + fake_loss) / 2
    d_loss.backward()
    ctx.opt_D.step()
    return d_loss.detach(), g_loss.detach()
