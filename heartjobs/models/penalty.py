"""WGAN-GP's gradient penalty (Gulrajani et al. 2017): the critic's input gradient pushed towards norm 1 on
random interpolates between real and generated images.

The penalty is differentiated with respect to the critic's weights, a double backward: the input gradient
is taken with create_graph=True. That works through the thesis' fully connected critic and through
convolutional ones (tests/test_beyond.py), but not through torch.compile'd graphs (AOTAutograd has no
double backward), so the trainer passes its eager critic here even when it compiles the rest. A critic for
the penalty should have no BatchNorm: the penalty is a per-image gradient norm, and batch statistics make
each image's score depend on the others in its batch (the paper's advice; wgan_gp's critic is the thesis
WGAN's, which has none).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def interpolates(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_hat = eps * real + (1 - eps) * fake, one eps per image (N x 1 x 1 x 1), a leaf that wants its grad."""
    return (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2, each image's gradient taken over all of
    its pixels. The interpolates, their gradients and the norms have the real images' dtype (float32 in
    training, also under bf16 autocast: a bf16 generated batch mixed with float32 is float32); the critic
    should return float32 scores (the trainer's do)."""
    x_hat = interpolates(real, fake, eps)
    scores = critic(x_hat)
    # each score depends on its own image only (no BatchNorm): the gradient of their sum is each image's
    (grads,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = torch.linalg.vector_norm(grads.flatten(1), ord=2, dim=1)
    return ((norms - 1) ** 2).mean()
