"""WGAN-GP (Gulrajani et al. 2017, Algorithm 1): the thesis WGAN's networks and schedule, with the gradient
penalty (heartjobs.models.penalty) instead of weight clipping."""

from __future__ import annotations

import torch

from heartjobs.models.family import StepContext
from heartjobs.models.penalty import gradient_penalty
from heartjobs.models.wgan import build, generator_step_on_schedule

__all__ = ["build", "step"]


def step(ctx: StepContext, real: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The critic every batch with the gradient penalty instead of clipping; the generator every n_critic-th
    batch, with that batch's noise (the thesis WGAN's schedule). The recorded D loss includes the penalty,
    as the paper's critic loss does."""
    z = ctx.noise(real.shape[0])
    ctx.opt_D.zero_grad(set_to_none=True)
    fake = ctx.generate(z).detach()
    # one interpolation weight per image, from the noise stream: seeded, checkpointed, on the device
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=ctx.noise_gen, device=ctx.device)
    # the eager D: torch.compile'd graphs have no double backward (heartjobs.models.penalty)
    penalty = gradient_penalty(lambda x: ctx.score(x, ctx.D), real, fake, eps)
    d_loss = -torch.mean(ctx.score(real)) + torch.mean(ctx.score(fake)) + ctx.train.gp_lambda * penalty
    d_loss.backward()
    ctx.opt_D.step()
    return d_loss.detach(), generator_step_on_schedule(ctx, z, index)
