"""StyleGAN2-ADA as a heartjobs model family (FAMILIES["stylegan2"]): its networks from the spec, its
exponential moving average, and one minibatch of the reference's training step.

The step is the reference's (NVlabs/stylegan2-ada-pytorch, commit d72cc7d: training/loss.py StyleGAN2Loss
and training/training_loop.py) with lazy regularisation, one optimiser step per phase:
- Gmain: the non-saturating logistic loss softplus(-D(G(z))), with style mixing;
- Greg, every G_REG_INTERVAL minibatches: path-length regularisation on a batch shrunk by PL_BATCH_SHRINK,
  its weight times the interval;
- Dmain: softplus(D(G(z))) + softplus(-D(x));
- Dreg, every D_REG_INTERVAL minibatches: R1, gamma / 2 * |grad_x D(x)|^2, times the interval.
Every image D sees goes through the trainer's augmentation (ADA by default for this family), and the signs
of D's scores on reals feed ADA's p (ctx.observe_real). The optimisers' lr and betas are adjusted for the
lazy intervals by the trainer (ModelFamily.reg_intervals). After each minibatch the EMA generator follows
the trained one with the reference's half-life in images (ema_kimg, with its ramp-up).

The EMA lives in the generator module (EMAGenerator): the trained network's parameters are its parameters
(so optimisers and parameter counts see exactly the reference's generator), the average is held as
buffers (so checkpoints and generator.pt carry it), and in eval mode the module generates with the average
and its fixed per-layer noise: what sample grids, generator.pt and every measurement use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from heartjobs.models.family import STYLEGAN2_PAPER256, Networks, StepContext
from heartjobs.models.stylegan2 import StyleGAN2Config, build_stylegan2
from heartjobs.models.stylegan2.networks import Discriminator, Generator

G_REG_INTERVAL = 4  # the reference's G_reg_interval: path length every 4 minibatches
D_REG_INTERVAL = 16  # and R1 every 16
PL_BATCH_SHRINK = 2
PL_DECAY = 0.01


def _as_buffers(module: nn.Module) -> nn.Module:
    """`module` with every parameter turned into a buffer of the same name (no gradient, not trained, not
    counted), for the moving average."""
    for sub in module.modules():
        for name in list(sub._parameters):
            value = sub._parameters.pop(name)
            sub.register_buffer(name, None if value is None else value.detach().clone())
    return module


class EMAGenerator(nn.Module):
    """The trained generator (`net`) and its exponential moving average (`ema`, buffers only), plus the
    path-length regulariser's running mean. Training mode generates with `net`, eval mode with `ema`."""

    def __init__(self, net: Generator):
        super().__init__()
        self.net = net
        self.ema = _as_buffers(copy.deepcopy(net))
        self.register_buffer("pl_mean", torch.zeros(()))
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._copies: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.net(z)
        # the average with its fixed per-layer noise (the reference's noise_mode "const", what its snapshot
        # grids use; its metrics draw the noise at random): a measurement is then a function of its seed alone
        return self.ema(z, noise_mode="const")

    def _apply(self, fn, recurse=True):  # a move or cast makes new tensors: pair them again
        self._pairs = None
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def update_ema(self, batch: int, images_shown: int, ema_kimg: float, ema_rampup: float) -> None:
        """One step of the average (the reference's): half-life ema_kimg thousand images, shortened to
        images_shown * ema_rampup while that is less (ema_rampup 0: no ramp-up); buffers copied."""
        ema_nimg = ema_kimg * 1000
        if ema_rampup > 0:
            ema_nimg = min(ema_nimg, images_shown * ema_rampup)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        if self._pairs is None:  # built once: (average, trained parameter) and (copy, buffer)
            averaged = dict(self.ema.named_buffers())
            self._pairs = [(averaged[name], p) for name, p in self.net.named_parameters()]
            self._copies = [(averaged[name], b) for name, b in self.net.named_buffers()]
        for average, value in self._pairs:
            average.copy_(value.detach().lerp(average, beta))
        for copy_, value in self._copies:
            copy_.copy_(value)


def config(networks: Networks) -> StyleGAN2Config:
    """The networks' configuration from the spec: latent_dim is z and w; the [architecture] knobs size it."""
    n = networks
    knobs = {key: getattr(n, key) for key in STYLEGAN2_PAPER256}
    knobs = {key: STYLEGAN2_PAPER256[key] if value is None else value for key, value in knobs.items()}
    return StyleGAN2Config(size=n.size, channels=n.channels, z_dim=n.latent_dim, w_dim=n.latent_dim, **knobs)


def build(networks: Networks) -> tuple[EMAGenerator, Discriminator]:
    generator, discriminator = build_stylegan2(config(networks))
    return EMAGenerator(generator), discriminator


def r1_penalties(
    score: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """D's scores on `real` and, per image, |grad_x D(x)|^2 (R1 before its gamma / 2), differentiable (the
    penalty is trained through)."""
    real = real.detach().requires_grad_(True)
    scores = score(real)
    (grads,) = torch.autograd.grad(scores.sum(), real, create_graph=True)
    return scores, grads.square().sum([1, 2, 3])


def path_lengths(images: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per image, the length of J_w^T y for the image's Jacobian J_w in its ws and the random image y =
    `noise` (already scaled by 1/sqrt(pixels)): sqrt of the mean over the ws of the squared norm over w's
    dimensions, as the reference computes it; differentiable."""
    (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    return grads.square().sum(2).mean(1).sqrt()


def _generate(ctx: StepContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of the trained generator with style mixing, and their ws."""
    net = ctx.G.net
    ws = net.mixed_ws(ctx.noise(n), ctx.train.style_mixing, generator=ctx.noise_gen)
    return net.synthesis(ws), ws


def step(ctx: StepContext, real: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    t = ctx.train
    G, D = ctx.G, ctx.D
    n = real.shape[0]
    minibatch, shown = ctx.progress(index)

    # Gmain: the generator's phase (D's weights get no gradient)
    D.requires_grad_(False)
    ctx.opt_G.zero_grad(set_to_none=True)
    fake, _ = _generate(ctx, n)
    g_loss = F.softplus(-ctx.score(fake)).mean()
    g_loss.backward()
    ctx.opt_G.step()

    # Greg: path length, every G_REG_INTERVAL minibatches
    if t.pl_weight > 0 and minibatch % G_REG_INTERVAL == 0:
        ctx.opt_G.zero_grad(set_to_none=True)
        fake, ws = _generate(ctx, max(1, n // PL_BATCH_SHRINK))
        h, w = fake.shape[2], fake.shape[3]
        pl_noise = torch.randn(fake.shape, generator=ctx.noise_gen, device=fake.device) / (h * w) ** 0.5
        pl_lengths = path_lengths(fake, ws, pl_noise)
        pl_mean = G.pl_mean.lerp(pl_lengths.mean(), PL_DECAY)
        G.pl_mean.copy_(pl_mean.detach())
        pl_penalty = (pl_lengths - pl_mean).square() * t.pl_weight
        (fake[:, 0, 0, 0] * 0 + pl_penalty).mean().mul(G_REG_INTERVAL).backward()
        ctx.opt_G.step()
    D.requires_grad_(True)

    # Dmain: the discriminator's phase, on generated images the generator is not trained through
    G.requires_grad_(False)
    ctx.opt_D.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake, _ = _generate(ctx, n)
    real_scores = ctx.score(real)
    ctx.observe_real(real_scores)
    d_loss = F.softplus(ctx.score(fake)).mean() + F.softplus(-real_scores).mean()
    d_loss.backward()
    ctx.opt_D.step()

    # Dreg: R1 on the real images, every D_REG_INTERVAL minibatches
    if t.r1_gamma > 0 and minibatch % D_REG_INTERVAL == 0:
        ctx.opt_D.zero_grad(set_to_none=True)
        # the eager D: a penalty needs the double backward. Its signs are not observed: ADA counts one
        # observation per minibatch (the reference's statistics also average Dr1's signs of the same reals)
        scores, r1 = r1_penalties(lambda x: ctx.score(x, ctx.D), real)
        (scores * 0 + r1 * (t.r1_gamma / 2)).mean().mul(D_REG_INTERVAL).backward()
        ctx.opt_D.step()
    G.requires_grad_(True)

    G.update_ema(n, shown, t.ema_kimg, t.ema_rampup)
    return d_loss.detach(), g_loss.detach()
