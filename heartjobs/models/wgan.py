"""The thesis' WGAN: the GAN's fully connected networks with the discriminator as a critic (no Sigmoid),
weight clipping, and a generator step on every n_critic-th batch (WGAN-GP keeps that schedule)."""

from __future__ import annotations

import torch

from heartjobs.models.family import Networks, StepContext
from heartjobs.models.mlp import MLPDiscriminator, MLPGenerator, mlp_networks


def build(networks: Networks) -> tuple[MLPGenerator, MLPDiscriminator]:
    # the critic is the GAN discriminator without its Sigmoid
    return mlp_networks(networks, sigmoid=False)


def step(ctx: StepContext, real: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The critic every batch (then weight clipping); the generator every n_critic-th batch, with that
    batch's noise."""
    z = ctx.noise(real.shape[0])
    ctx.opt_D.zero_grad(set_to_none=True)
    d_loss = -torch.mean(ctx.score(real)) + torch.mean(ctx.score(ctx.generate(z).detach()))
    d_loss.backward()
    ctx.opt_D.step()
    with torch.no_grad():
        for p in ctx.D.parameters():
            p.clamp_(-ctx.train.clip_value, ctx.train.clip_value)
    return d_loss.detach(), generator_step_on_schedule(ctx, z, index)


def generator_step_on_schedule(ctx: StepContext, z: torch.Tensor, index: int) -> torch.Tensor | None:
    """WGAN's and WGAN-GP's generator step: on every n_critic-th batch, with that batch's noise, to raise the
    critic's score of its images; None on the other batches."""
    if index % ctx.train.n_critic:
        return None
    ctx.opt_G.zero_grad(set_to_none=True)
    g_loss = -torch.mean(ctx.score(ctx.generate(z)))
    g_loss.backward()
    ctx.opt_G.step()
    return g_loss.detach()
