"""StyleGAN2's low-level operations in plain PyTorch: FIR resampling (upfirdn2d and its up/down wrappers),
convolution with resampling (conv2d_resample), and bias plus activation (bias_act).

Each follows the reference's pure-PyTorch path in NVlabs/stylegan2-ada-pytorch (torch_utils/ops,
commit d72cc7d): `_upfirdn2d_ref`, `conv2d_resample` with its fast paths, `_bias_act_ref`. The reference's
custom CUDA kernels compute the same functions faster; here nothing is compiled. Plain F.conv2d replaces
the reference's conv2d_gradfix, which only works around cuDNN for the double backward that R1 and path
length need; autograd's own double backward of conv2d is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Activation(NamedTuple):
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float  # keeps the signal's second moment for unit-variance input (He et al.)


# The reference's activation_funcs, the ones its networks use (with its default alphas and gains).
ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x, 0.0, 1.0),
    "relu": Activation(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add bias b along dim, apply act, scale by gain (None: the activation's def_gain), clamp to +-clamp."""
    if act not in ACTIVATIONS:
        raise ValueError(f"activation {act!r}: use one of {', '.join(ACTIVATIONS)}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp {clamp}: must be >= 0 or None")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    x, y = value
    return int(x), int(y)


def _padding4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """[x0, x1, y0, y1] from an int, [x, y] or [x0, x1, y0, y1] (the reference's _parse_padding)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a prepared filter; a separable one is as wide as it is tall."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(
    f: Sequence[float] | torch.Tensor | None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """A float32 FIR filter for upfirdn2d: 1-D taps become their outer product (kept separable from 8 taps
    on, as in the reference), normalised to unit DC gain. Made on the default device, so a network built
    under `torch.device("meta")` makes it there too (the reference fixes the CPU)."""
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter of shape {tuple(f.shape)}: must be 1-D or 2-D and not empty")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Per channel: upsample by inserting up-1 zeros after each pixel, pad (negative: crop), convolve with
    f (keeping only outputs whose footprint lies inside), keep every down-th pixel. The reference's
    `_upfirdn2d_ref`; like scipy.signal.upfirdn in 2-D. flip_filter True: correlation instead."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d input of shape {tuple(x.shape)}: must be N x C x H x W")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    batch, channels, in_h, in_w = x.shape
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)

    # zero insertion: a trailing axis of length 1 padded to up, then folded into the spatial axis
    x = x.reshape([batch, channels, in_h, 1, in_w, 1])
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([batch, channels, in_h * upy, in_w * upx])

    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:  # conv2d correlates; a convolution flips the filter
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=channels)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=channels)
        x = F.conv2d(x, f.unsqueeze(3), groups=channels)
    return x[:, :, ::downy, ::downx]


def upsample2d(
    x: torch.Tensor, f: torch.Tensor | None, up: int = 2, padding: int | Sequence[int] = 0, gain: float = 1
) -> torch.Tensor:
    """x up times larger, filtered by f; padded so the output is exactly up times the input."""
    upx, upy = _pair(up)
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    # gain up*up: of the zero-stuffed pixels only 1 in up*up is non-zero, and f has unit DC gain
    return upfirdn2d(x, f, up=up, padding=p, gain=gain * upx * upy)


def downsample2d(
    x: torch.Tensor, f: torch.Tensor | None, down: int = 2, padding: int | Sequence[int] = 0, gain: float = 1
) -> torch.Tensor:
    """x down times smaller, filtered by f first; padded so the output is exactly the input / down."""
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, gain=gain)


def _conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
) -> torch.Tensor:
    """conv2d (correlation; flip_weight False: true convolution) or its transpose."""
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """2-D convolution with up- or downsampling by the FIR filter f, padded once, with respect to the
    upsampled image. Each case takes the reference's cheapest equivalent: downsample then 1x1 convolution,
    1x1 convolution then upsample, filter then strided convolution, transposed strided convolution then
    filter; otherwise the generic upsample, convolve, downsample."""
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d_resample: input {tuple(x.shape)} and weight {tuple(w.shape)} must be 4-D")
    if up < 1 or down < 1 or groups < 1:
        raise ValueError(f"conv2d_resample: up {up}, down {down} and groups {groups} must be >= 1")
    out_channels, in_per_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)

    # the padding the filter needs to keep the output at exactly up x or 1/down x
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d(x, w, groups=groups, flip_weight=flip_weight)

    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        # a transposed convolution inserts the zeros and convolves in one op; its weight is [in, out/groups]
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv2d(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
