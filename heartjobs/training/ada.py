"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data") for one-channel CT slices: the reference's 'bgc' augmentation pipeline, and the
controller that sets its probability p from how much the discriminator overfits.

Facts from NVlabs/stylegan2-ada-pytorch (commit d72cc7d: training/augment.py, training/training_loop.py),
reimplemented in plain PyTorch:

- Pixel blitting (x-flip, 90-degree rotations, integer translation by up to 1/8 of the side) and general
  geometry (isotropic scaling, lognormal std 0.2 in log2; rotation by up to a full turn, before and after
  the anisotropic scaling, each with probability 1 - sqrt(1 - p) so that one of them happens with
  probability p; anisotropic scaling, std 0.2; fractional translation, std 0.125 of the side) compose one
  3x3 inverse matrix per image, executed once: reflection padding, 2x upsampling with the Symlet-6 (sym6)
  low-pass filter, bilinear grid_sample, filtered 2x downsampling.
- Colour, reduced to one channel exactly as the reference's one-channel path reduces its 4x4 colour matrix:
  brightness (added, normal with std 0.2), contrast (multiplied about 0, lognormal with std 0.5 in log2),
  luma flip (the Householder reflection about the luma axis, which on one channel is negation). Hue
  rotation and saturation are skipped, as the reference skips them for one channel: both act only on the
  components orthogonal to the luma axis, and a one-channel image has no such component (hue rotates about
  the only axis there is, saturation scales nothing), so both are identities.
- Each operation happens to each image with probability p (times its multiplier, all 1 in 'bgc'), with a
  value drawn as the reference draws it; x-flip and luma flip draw "flip or not", so each changes an image
  with probability p / 2, as in the reference.
- The controller: every `interval` batches, r_t = E[sign(D(real))] over the logits seen since the last
  adjustment, and p += sign(r_t - target) * (images in the interval) / (kimg * 1000), clamped to [0, 1].

Deviations, all of which leave the images the reference would produce unchanged up to float rounding:
- Reflection padding always uses the largest margin the reference may use (side - 1), instead of the
  batch's own maximum, so no value has to be read back from the device (no synchronisation per call) and
  an image's result does not depend on its batch; reflection padding of a wider margin agrees with the
  narrower one wherever the narrower one reaches. It costs more arithmetic (on one CPU thread, 16 images
  take about 0.04 s at 64 px and 0.8 s at 256 px).
- An image whose matrix is exactly the identity (none of the geometric operations happened to it) is passed
  through unresampled, so p = 0 is the identity bit for bit; the reference resamples it, which reproduces
  it to float rounding (the sym6 low-pass filter's up- and downsampling are inverse to each other).
- p is clamped at 1 as well as at 0: the reference lets it climb past 1, where it has no further effect,
  and then needs as many intervals to come back down.

Every draw is per image, on the images' device, from the generator given (the trainer's seeded augment
stream, saved in its checkpoints), in the same order whatever p is, so runs are bit-identical on the CPU
and resume exactly. The pipeline is differentiable in the images, to second order (R1 and WGAN-GP take a
gradient through it), so the generator learns through it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Symlet-6 low-pass filter (the reference's wavelets['sym6']): orthogonal, so upsampling and then
# downsampling with it is the identity.
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)

# The reference's 'bgc' set, minus hue and saturation (identities on one channel): name -> multiplier.
BGC = {
    "xflip": 1.0,
    "rotate90": 1.0,
    "xint": 1.0,
    "scale": 1.0,
    "rotate": 1.0,
    "aniso": 1.0,
    "xfrac": 1.0,
    "brightness": 1.0,
    "contrast": 1.0,
    "lumaflip": 1.0,
}

XINT_MAX = 0.125  # integer translation: uniform in +-this fraction of the side, rounded to whole pixels
SCALE_STD = 0.2  # isotropic scaling: log2 standard deviation
ROTATE_MAX = 1.0  # rotation: uniform in +-this fraction of half a turn (1 = any angle)
ANISO_STD = 0.2  # anisotropic scaling: log2 standard deviation
XFRAC_STD = 0.125  # fractional translation: standard deviation, as a fraction of the side
BRIGHTNESS_STD = 0.2  # brightness: standard deviation of the offset added
CONTRAST_STD = 0.5  # contrast: log2 standard deviation of the factor

TARGET = 0.6  # the reference's r_t target
INTERVAL = 4  # batches between adjustments of p
KIMG = 500  # thousands of images for p to move by 1


# --- 3x3 homogeneous matrices, one per image (N x 3 x 3), mapping output pixels to input pixels ---


def _matrix(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """A batch of matrices from rows of per-image tensors (shaped like `like`) and constants."""
    elems = [e if isinstance(e, torch.Tensor) else torch.full_like(like, e) for row in rows for e in row]
    return torch.stack(elems, dim=-1).reshape(*like.shape, len(rows), len(rows[0]))


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _matrix([[cos, torch.sin(-theta), 0], [sin, cos, 0], [0, 0, 1]], theta)


def _constant(rows: list[list[float]], device: torch.device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, device=device)


# --- the reference's upfirdn2d up- and downsampling by 2 with a separable filter, as transposed and strided
# convolutions: the same sums, without multiplying the zeros that upsampling inserts or computing the
# samples that downsampling drops (at 256 px that is most of the pipeline's time) ---


def _upsample2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The reference's upsample2d(x, f, up=2): zeros inserted after each pixel, padded by
    ((taps + 1) // 2, (taps - 2) // 2), convolved with f at gain 2 per axis; 2H x 2W out."""
    n, c, h, w = x.shape
    taps = f.numel()
    k = (f * 2).to(x.dtype)
    start = taps - 1 - (taps + 1) // 2  # where the padded convolution's first sample lies in the full one
    x = F.conv_transpose2d(x.reshape(n * c, 1, h, w), k.view(1, 1, 1, taps), stride=(1, 2))[..., start : start + 2 * w]
    x = F.conv_transpose2d(x, k.view(1, 1, taps, 1), stride=(2, 1))[:, :, start : start + 2 * h, :]
    return x.reshape(n, c, 2 * h, 2 * w)


def _downsample2x(x: torch.Tensor, f: torch.Tensor, crop: int) -> torch.Tensor:
    """The reference's downsample2d(x, f, down=2, padding=-crop, flip_filter=True): padded (or cropped,
    where negative) by (-crop + (taps - 1) // 2, -crop + (taps - 2) // 2), correlated with f, every
    second sample kept."""
    n, c, h, w = x.shape
    taps = f.numel()
    k = f.to(x.dtype)
    p0, p1 = -crop + (taps - 1) // 2, -crop + (taps - 2) // 2
    x = F.pad(x.reshape(n * c, 1, h, w), [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    x = F.conv2d(x, k.view(1, 1, 1, taps), stride=(1, 2))
    x = F.conv2d(x, k.view(1, 1, taps, 1), stride=(2, 1))
    return x.reshape(n, c, x.shape[2], x.shape[3])


class AugmentPipe(nn.Module):
    """The augmentation pipeline with its probability p (a buffer: in state_dict, on the module's
    device). Call it on N x 1 x H x W images with the generator to draw from. `ops` maps the operations
    used to their probability multipliers (BGC's names; default BGC)."""

    def __init__(self, p: float = 0.0, ops: dict[str, float] | None = None, device: torch.device | str = "cpu"):
        super().__init__()
        ops = dict(BGC if ops is None else ops)
        unknown = [name for name in ops if name not in BGC]
        if unknown:
            raise ValueError(f"unknown ADA operation {unknown[0]!r}; use {', '.join(BGC)}")
        self.ops = {name: float(ops.get(name, 0.0)) for name in BGC}
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32, device=device))
        taps = torch.tensor(SYM6, dtype=torch.float64)
        self.register_buffer("filter", (taps / taps.sum()).to(device=device, dtype=torch.float32), persistent=False)

    def _gate(self, name: str, value: torch.Tensor, neutral: float, generator: torch.Generator) -> torch.Tensor:
        """value where the operation happens to an image (probability multiplier x p), else neutral; one
        uniform draw per image (per row of value)."""
        shape = (value.shape[0],) + (1,) * (value.ndim - 1)
        happens = torch.rand(shape, generator=generator, device=value.device) < self.ops[name] * self.p
        return torch.where(happens, value, torch.full_like(value, neutral))

    def _geometry(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The N x 3 x 3 inverse matrices (output pixel -> input pixel, about the image centre), in the
        reference's order of draws; None when no geometric operation is used."""
        ops, device = self.ops, images.device
        n, _, h, w = images.shape

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand((n, *shape), generator=generator, device=device)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn((n, *shape), generator=generator, device=device)

        g = None

        def then(m: torch.Tensor) -> None:
            nonlocal g
            g = m if g is None else g @ m

        if ops["xflip"] > 0:
            i = self._gate("xflip", torch.floor(rand() * 2), 0, generator)
            then(_scale(1 - 2 * i, torch.ones_like(i)))
        if ops["rotate90"] > 0:
            i = self._gate("rotate90", torch.floor(rand() * 4), 0, generator)
            then(_rotate(math.pi / 2 * i))  # the reference's rotate2d_inv(-pi/2 * i)
        if ops["xint"] > 0:
            t = self._gate("xint", (rand(2) * 2 - 1) * XINT_MAX, 0, generator)
            then(_translate(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h)))
        if ops["scale"] > 0:
            s = self._gate("scale", torch.exp2(randn() * SCALE_STD), 1, generator)
            then(_scale(1 / s, 1 / s))
        # two rotations, each with p_rot, so that at least one happens with probability p (the reference's)
        p_rot = 1 - torch.sqrt((1 - ops["rotate"] * self.p).clamp(0, 1))
        if ops["rotate"] > 0:
            theta = (rand() * 2 - 1) * math.pi * ROTATE_MAX
            theta = torch.where(rand() < p_rot, theta, torch.zeros_like(theta))
            then(_rotate(theta))  # before the anisotropic scaling
        if ops["aniso"] > 0:
            s = self._gate("aniso", torch.exp2(randn() * ANISO_STD), 1, generator)
            then(_scale(1 / s, s))
        if ops["rotate"] > 0:
            theta = (rand() * 2 - 1) * math.pi * ROTATE_MAX
            theta = torch.where(rand() < p_rot, theta, torch.zeros_like(theta))
            then(_rotate(theta))  # after it
        if ops["xfrac"] > 0:
            t = self._gate("xfrac", randn(2) * XFRAC_STD, 0, generator)
            then(_translate(-t[:, 0] * w, -t[:, 1] * h))
        return g

    def _resample(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x transformed by the inverse matrices g, as the reference executes them (see the module's
        docstring for its margin)."""
        n, c, h, w = x.shape
        device = x.device
        f = self.filter
        hz_pad = f.numel() // 4
        mx, my = w - 1, h - 1  # the widest margin the reference may pad with, on every side
        x = F.pad(x, [mx, mx, my, my], mode="reflect")
        x = _upsample2x(x, f)
        # in the 2x-upsampled image's pixel units, then normalised for affine_grid (align_corners=False)
        up = _constant([[2, 0, 0], [0, 2, 0], [0, 0, 1]], device)
        down = _constant([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]], device)
        g = up @ g @ down
        half_in = _constant([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], device)
        half_out = _constant([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], device)
        g = half_in @ g @ half_out
        out_h, out_w = (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2
        to_norm = _constant([[2 / x.shape[3], 0, 0], [0, 2 / x.shape[2], 0], [0, 0, 1]], device)
        from_norm = _constant([[out_w / 2, 0, 0], [0, out_h / 2, 0], [0, 0, 1]], device)
        g = to_norm @ g @ from_norm
        grid = F.affine_grid(g[:, :2, :].to(x.dtype), [n, c, out_h, out_w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _downsample2x(x, f, crop=hz_pad * 2)

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"ADA takes N x 1 x H x W images, not {tuple(images.shape)}")
        n = images.shape[0]
        ops, device = self.ops, images.device

        g = self._geometry(images, generator)
        if g is not None:
            untouched = (g == torch.eye(3, device=device)).flatten(1).all(dim=1).view(n, 1, 1, 1)
            images = torch.where(untouched, images, self._resample(images, g))

        # colour: (x + b) * c * flip, the one-channel reduction of the reference's colour matrix
        if ops["brightness"] > 0:
            b = torch.randn(n, generator=generator, device=device) * BRIGHTNESS_STD
            images = images + self._gate("brightness", b, 0, generator).view(n, 1, 1, 1).to(images.dtype)
        if ops["contrast"] > 0:
            c = torch.exp2(torch.randn(n, generator=generator, device=device) * CONTRAST_STD)
            images = images * self._gate("contrast", c, 1, generator).view(n, 1, 1, 1).to(images.dtype)
        if ops["lumaflip"] > 0:
            i = self._gate("lumaflip", torch.floor(torch.rand(n, generator=generator, device=device) * 2), 0, generator)
            images = images * (1 - 2 * i).view(n, 1, 1, 1).to(images.dtype)
        return images


class AdaController:
    """Sets the pipe's p from the discriminator's signs on real images: every `interval` observed batches,
    r_t = mean sign, p += sign(r_t - target) * images / (kimg * 1000), clamped to [0, 1]. With fixed=True
    r_t is still measured (for the logs) and p is left as it is."""

    def __init__(
        self, p: torch.Tensor, target: float = TARGET, interval: int = INTERVAL, kimg: float = KIMG, fixed: bool = False
    ):
        if not 0 <= target <= 1:
            raise ValueError(f"ADA target must be in [0, 1], not {target}")
        if interval < 1:
            raise ValueError(f"ADA interval must be at least 1 batch, not {interval}")
        if kimg <= 0:
            raise ValueError(f"ADA kimg must be positive, not {kimg}")
        self.p, self.target, self.interval, self.kimg, self.fixed = p, target, interval, kimg, fixed
        self.signs = torch.zeros((), dtype=torch.float32, device=p.device)  # sum of signs since the last step
        self.logits = 0  # how many logits that sum covers
        self.images = 0  # images shown since the last step (the batch sizes observed)
        self.batches = 0  # batches observed, ever
        self.rt: torch.Tensor | None = None  # the last interval's r_t; None before the first

    def observe(self, real_logits: torch.Tensor, batch_size: int | None = None) -> None:
        """After a D step on real images: their logits (any shape, one per image) and the batch's size
        (default: the number of logits). On the device: nothing is read back."""
        self.signs += real_logits.detach().float().sign().sum()
        self.logits += real_logits.numel()
        self.images += real_logits.shape[0] if batch_size is None else batch_size
        self.batches += 1
        if self.batches % self.interval:
            return
        self.rt = self.signs / self.logits
        if not self.fixed:
            step = self.images / (self.kimg * 1000)
            self.p.copy_((self.p + torch.sign(self.rt - self.target) * step).clamp(0, 1))
        self.signs = torch.zeros_like(self.signs)
        self.logits = self.images = 0

    def state_dict(self) -> dict:
        return {
            "signs": self.signs.clone(),
            "logits": self.logits,
            "images": self.images,
            "batches": self.batches,
            "rt": None if self.rt is None else self.rt.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.p.device
        self.signs = state["signs"].to(device=device, dtype=torch.float32)
        self.logits, self.images, self.batches = int(state["logits"]), int(state["images"]), int(state["batches"])
        self.rt = None if state["rt"] is None else state["rt"].to(device=device, dtype=torch.float32)


class Ada:
    """What the trainer holds: the pipe, its controller and the augment stream. `ada(images)` (or
    `ada.augment(images)`) before every D call; `ada.observe(real_logits, batch_size)` after each D step
    on reals; `ada.p` and `ada.rt` (0-d tensors on the device; rt None before the first interval) for the
    logs; state_dict()/load_state_dict() for checkpoints (the generator's state is the trainer's to save,
    as `ada.generator`, like DiffAugment's). fixed_p: a constant p, no adaptation (r_t is still measured)."""

    def __init__(
        self,
        generator: torch.Generator,
        target: float = TARGET,
        interval: int = INTERVAL,
        kimg: float = KIMG,
        fixed_p: float | None = None,
        ops: dict[str, float] | None = None,
    ):
        if fixed_p is not None and not 0 <= fixed_p <= 1:
            raise ValueError(f"ADA fixed p must be in [0, 1], not {fixed_p}")
        self.generator = generator
        self.pipe = AugmentPipe(0.0 if fixed_p is None else fixed_p, ops, device=generator.device)
        self.controller = AdaController(self.pipe.p, target, interval, kimg, fixed=fixed_p is not None)

    @property
    def p(self) -> torch.Tensor:
        return self.pipe.p

    @property
    def rt(self) -> torch.Tensor | None:
        return self.controller.rt

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe(images, self.generator)

    __call__ = augment

    def observe(self, real_logits: torch.Tensor, batch_size: int | None = None) -> None:
        self.controller.observe(real_logits, batch_size)

    def state_dict(self) -> dict:
        return {"p": self.pipe.p.clone(), **self.controller.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.pipe.p.copy_(state["p"])  # in place: the controller holds this very tensor
        self.controller.load_state_dict(state)
