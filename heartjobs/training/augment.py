"""DiffAugment (Zhao et al. 2020) for one-channel CT slices: random translation, cutout, brightness and
contrast, applied to real and generated images alike before every discriminator call.

Each operation is differentiable in its input (gathers, masks, affine maps), so the generator learns
through it; the discriminator only ever sees augmented images, and since the generator's images are
augmented the same way, the augmentations do not leak into what it generates. The parameters are the
reference implementation's (github.com/mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py):
translation by up to 1/8 of the image with zero fill, one cutout square of half the image side (clipped
at the borders), brightness +-0.5 and contrast x[0.5, 1.5] around each image's mean, in [-1, 1] units;
its colour operation's saturation is left out (one channel). Every draw is per image, on the images'
device, from the generator given (the trainer's own seeded stream, saved in its checkpoints), so runs are
bit-identical on the CPU and resume exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from heartjobs.spec.defaults import AUGMENTATIONS

TRANSLATION_RATIO = 1 / 8  # the largest shift, as a fraction of the image side
CUTOUT_RATIO = 1 / 2  # the cut square's side, as a fraction of the image side
BRIGHTNESS = 0.5  # added: uniform in [-0.5, 0.5)
CONTRAST = (0.5, 1.5)  # the deviation from the image's mean is scaled by a factor uniform in this range


def _per_image(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One uniform [0, 1) draw per image, shaped to broadcast over C x H x W."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def _offsets(x: torch.Tensor, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """One integer in [low, high) per image, shaped N x 1 x 1 to broadcast over H x W."""
    return torch.randint(low, high, (x.shape[0], 1, 1), generator=generator, device=x.device)


def translation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by whole pixels, up to TRANSLATION_RATIO of its side in each axis; what comes in
    from outside is 0 (mid-grey in [-1, 1])."""
    n, c, h, w = x.shape
    max_dy, max_dx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = _offsets(x, -max_dy, max_dy + 1, generator)
    dx = _offsets(x, -max_dx, max_dx + 1, generator)
    # output pixel (i, j) shows input pixel (i + dy, j + dx) where that lies inside the image
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    source = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    shifted = x.reshape(n, c, h * w).gather(2, source).view(n, c, h, w)
    return shifted * inside.unsqueeze(1).to(x.dtype)


def cutout(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One square of CUTOUT_RATIO of the side per image set to 0, centred anywhere in the image (clipped
    at its borders)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    # the reference's centres: 0..h-1, and h too when the side is even (so the square can hang off either edge)
    top = _offsets(x, 0, h + (1 - size_y % 2), generator) - size_y // 2
    left = _offsets(x, 0, w + (1 - size_x % 2), generator) - size_x // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    cut = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~cut).unsqueeze(1).to(x.dtype)


def brightness(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image plus one offset uniform in [-BRIGHTNESS, BRIGHTNESS)."""
    return x + (_per_image(x, generator) - 0.5) * (2 * BRIGHTNESS)


def contrast(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image's deviation from its own mean scaled by one factor uniform in CONTRAST."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    low, high = CONTRAST
    return (x - mean) * (_per_image(x, generator) * (high - low) + low) + mean


# The spec's names, each this module's function of that name: a name without one fails here, at import.
OPERATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    name: globals()[name] for name in AUGMENTATIONS
}


class DiffAugment:
    """A policy ("translation,cutout": AUGMENTATIONS' names, applied in the order given) drawing from
    one generator. Call it on N x C x H x W images in [-1, 1]."""

    def __init__(self, policy: str, generator: torch.Generator):
        names = policy.split(",")
        unknown = [name for name in names if name not in OPERATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}; use {', '.join(OPERATIONS)}")
        self.operations = [OPERATIONS[name] for name in names]
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for operation in self.operations:
            x = operation(x, self.generator)
        return x
