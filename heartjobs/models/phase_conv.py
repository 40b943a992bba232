"""Nearest-neighbour x2 upsampling followed by a 3x3 convolution (padding 1), computed exactly on the
low-resolution input: four output phases of 2x2 taps each, then a pixel shuffle (issue 32's rewrite).

The identity, per axis. The upsampled signal is u[i] = x[i // 2]; the convolution (cross-correlation, zero
padding 1) gives y[i] = w[0] u[i-1] + w[1] u[i] + w[2] u[i+1]. For an even output i = 2m the three taps read
x[m-1], x[m], x[m]; for an odd one, i = 2m+1, they read x[m], x[m], x[m+1]. So

    phase 0:  y[2m]   = w[0] x[m-1]          + (w[1] + w[2]) x[m]
    phase 1:  y[2m+1] = (w[0] + w[1]) x[m]   + w[2] x[m+1]

and the upsampled zero padding (u[-1] = u[2n] = 0) is the low-resolution zero padding (x[-1] = x[n] = 0).
In 2-D the phase (a, b) kernel is A_a w A_b^T with A_0 = [[1, 0, 0], [0, 1, 1]], A_1 = [[1, 1, 0], [0, 0, 1]]:
2 x 2 taps on low-resolution offsets (-1, 0) for phase 0 and (0, +1) for phase 1. Each output pixel then
costs 4 multiply-adds per input channel instead of 9: 2.25x fewer for the layer.

How it is computed (the fastest exact formulation measured, bench/bench_phase_conv.py): one 2x2 convolution
with 4 x C_out output channels on the input zero-padded by 1, which gives (H+1) x (W+1) positions; position
p covers low-resolution rows p-1 and p, so phase a reads its rows from p = m + a. Each phase's H x W window
is copied into its interleaved place (a pixel shuffle with a per-phase offset; _Interleave, one strided copy
each way). One large convolution rather than four small ones keeps the matrix products big; the extra row
and column cost (H+1)(W+1)/(HW) more, 3 % at 64 x 64 pixels. A 3x3 convolution with 4 x C_out outputs and zero
taps would need no offsets but does all 9 taps: no fewer multiply-adds than the direct path.

`UpsampleConv` is an nn.Conv2d holding the original 3x3 weight and bias (the same Parameters, state_dict
keys and shapes) and builds the phase kernels from the 3x3 weight in every forward pass, differentiably:
gradients reach the 3x3 weight, so checkpoints and parameter counts do not change. The sums w[1] + w[2]
round differently from the direct path's two products, so the two agree to float round-off, not bit for bit
(tests/test_phase_conv.py). Bilinear upsampling (SNGAN's generator) is another function: not rewritten.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UpsampleConv",
    "phase_conv",
    "phase_kernels",
    "rewrite_generator",
    "rewrite_upsample_convs",
    "upsample_conv",
]

# Row r of _COLLAPSE[a] sums the 3x3 taps that land on low-resolution tap r of phase a (see the docstring).
_COLLAPSE = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """The 3x3 kernel (C_out, C_in, 3, 3) collapsed into the four phases' 2x2 kernels, stacked as one
    (4 C_out, C_in, 2, 2) kernel whose output channel k C_out + c is channel c of phase k = 2 a + b."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"phase_kernels takes a 3x3 kernel, got {tuple(weight.shape)}")
    collapse = torch.tensor(_COLLAPSE, dtype=weight.dtype, device=weight.device)  # (phase, tap, 3)
    # kernel[a, b, o, i, r, s] = sum_{k,l} collapse[a, r, k] * weight[o, i, k, l] * collapse[b, s, l]
    kernels = torch.einsum("ark,oikl,bsl->aboirs", collapse, weight, collapse)
    return kernels.reshape(4 * weight.shape[0], weight.shape[1], 2, 2)


class _Interleave(torch.autograd.Function):
    """(N, 4 C, H+1, W+1) phase maps to (N, C, 2H, 2W): out[2m + a, 2n + b] = phase (a, b) at [m + a, n + b].
    A pixel shuffle with a per-phase offset, as one strided copy per phase each way, in the input's memory
    format (autograd through slicing would allocate and sum four full-size zero gradients)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        n, c4, h1, w1 = y.shape
        c, h, w = c4 // 4, h1 - 1, w1 - 1
        ctx.shape = (c, h, w)
        fmt = torch.channels_last if _channels_last(y) else torch.contiguous_format
        out = torch.empty((n, c, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=fmt)
        grid = out.unflatten(2, (h, 2)).unflatten(4, (w, 2))  # a view: [n, c, m, a, n', b]
        for a in (0, 1):
            for b in (0, 1):
                k = 2 * a + b
                grid[:, :, :, a, :, b].copy_(y[:, k * c : (k + 1) * c, a : a + h, b : b + w])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        c, h, w = ctx.shape
        n = grad_out.shape[0]
        fmt = torch.channels_last if _channels_last(grad_out) else torch.contiguous_format
        grad = torch.empty((n, 4 * c, h + 1, w + 1), dtype=grad_out.dtype, device=grad_out.device, memory_format=fmt)
        grid = grad_out.unflatten(2, (h, 2)).unflatten(4, (w, 2))
        for a in (0, 1):
            for b in (0, 1):
                k = 2 * a + b
                phase = grad[:, k * c : (k + 1) * c]
                phase[:, :, a : a + h, b : b + w].copy_(grid[:, :, :, a, :, b])
                phase[:, :, h * (1 - a)].zero_()  # the row and column this phase does not use
                phase[:, :, :, w * (1 - b)].zero_()
        return grad


def _channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def phase_conv(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The four phases of (N, C_in, H, W) under `kernels` from phase_kernels, interleaved to (N, C_out, 2H, 2W).
    Every output pixel comes from exactly one phase, so the bias, repeated per phase, is added once."""
    # (H+1) x (W+1) positions; position p covers low-resolution rows p-1 and p; phase a reads p = m + a
    y = F.conv2d(x, kernels, None if bias is None else bias.repeat(4), padding=1)
    return _Interleave.apply(y)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv2d(upsample_nearest_x2(x), weight, bias, padding=1), computed as four 2x2 phase convolutions."""
    return phase_conv(x, phase_kernels(weight), bias)


class UpsampleConv(nn.Conv2d):
    """nn.Upsample(scale_factor=2) then this 3x3 convolution (stride 1, padding 1), computed by upsample_conv.
    It is an nn.Conv2d with the same parameters, so a network that swaps (Upsample, Conv2d) for (Identity,
    UpsampleConv) keeps its state_dict keys, shapes and parameter count (rewrite_upsample_convs)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_channels, out_channels, 3, stride=1, padding=1, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> UpsampleConv:
        """The same layer with the same Parameter objects (not copies), computed through the phases."""
        plain = (conv.stride, conv.dilation, conv.groups, conv.padding_mode) == ((1, 1), (1, 1), 1, "zeros")
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or not plain:
            raise ValueError(f"UpsampleConv takes a 3x3 convolution with padding 1 and stride 1, got {conv}")
        layer = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None, device="meta")
        layer.weight, layer.bias = conv.weight, conv.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_conv(x, self.weight, self.bias)


def _is_nearest_x2(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Upsample)
        and module.mode == "nearest"
        and module.size is None
        and module.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
    )


def rewrite_upsample_convs(sequential: nn.Sequential) -> int:
    """Swap every nearest x2 nn.Upsample directly followed by a 3x3 stride-1 padding-1 nn.Conv2d in
    `sequential` for (nn.Identity, UpsampleConv) in place, sharing the parameters; the number swapped. The
    Identity keeps the later layers' indices, hence the state_dict keys."""
    swapped = 0
    for index in range(len(sequential) - 1):
        up, conv = sequential[index], sequential[index + 1]
        if _is_nearest_x2(up) and type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.padding == (1, 1):
            sequential[index + 1] = UpsampleConv.from_conv(conv)
            sequential[index] = nn.Identity()
            swapped += 1
    return swapped


def rewrite_generator(generator: nn.Module) -> int:
    """rewrite_upsample_convs on every nn.Sequential in `generator` ([train] phase_conv: the trainer's
    generator); the number swapped. A generator with nothing to swap is refused: the spec check
    (family.upsample_conv) lets the switch through only for generators that have the pattern."""
    swapped = sum(rewrite_upsample_convs(m) for m in list(generator.modules()) if isinstance(m, nn.Sequential))
    if not swapped:
        raise ValueError(f"{type(generator).__name__} has no nearest x2 upsampling followed by a 3x3 convolution")
    return swapped
