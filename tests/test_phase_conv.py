"""Issue 32's exact rewrite: nearest x2 upsampling + 3x3 convolution equals four 2x2 phase convolutions and a
pixel shuffle (heartjobs.models.phase_conv), in outputs and gradients, with the DCGAN generator's
parameters unchanged; and its float32 difference from the direct path is smaller than TF32's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heartjobs.models.dcgan import DCGANGenerator
from heartjobs.models.phase_conv import UpsampleConv, phase_conv, phase_kernels, rewrite_upsample_convs, upsample_conv

SHAPES = [  # (batch, C_in, C_out, H, W): odd and even sizes, single pixels and channels
    (1, 1, 1, 1, 1),
    (2, 3, 4, 5, 7),
    (3, 8, 5, 6, 4),
    (2, 16, 8, 9, 8),
    (1, 4, 6, 2, 3),
]


def direct(x, weight, bias):
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)


def _case(shape, dtype, seed=0, bias=True):
    n, c_in, c_out, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=dtype)
    b = torch.randn(c_out, generator=g, dtype=dtype) if bias else None
    upstream = torch.randn(n, c_out, 2 * h, 2 * w, generator=g, dtype=dtype)
    return x, weight, b, upstream


def _step(route, x, weight, bias, upstream):
    """Outputs and the gradients of one step's loss sum(out * upstream) w.r.t. input, weight and bias."""
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = route(*leaves) if bias is not None else route(*leaves, None)
    grads = torch.autograd.grad((out * upstream).sum(), leaves)
    return out.detach(), grads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_identity_in_float64(shape, bias):
    x, weight, b, upstream = _case(shape, torch.float64, bias=bias)
    out, grads = _step(upsample_conv, x, weight, b, upstream)
    ref_out, ref_grads = _step(direct, x, weight, b, upstream)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for grad, ref in zip(grads, ref_grads, strict=True):  # input, 3x3 weight, bias
        assert grad.shape == ref.shape
        torch.testing.assert_close(grad, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_identity_in_float32_and_channels_last(shape):
    x, weight, b, upstream = _case(shape, torch.float32, seed=1)
    ref_out, ref_grads = _step(direct, x, weight, b, upstream)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl, ul = x.contiguous(memory_format=layout), upstream.contiguous(memory_format=layout)
        out, grads = _step(upsample_conv, xl, weight, b, ul)
        # float32 round-off of sums over up to 9 C_in terms of unit-variance products
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
        for grad, ref in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-4)
    xl = x.contiguous(memory_format=torch.channels_last)
    if shape[3] > 1 or shape[4] > 1:  # keeps channels_last, as the trainer's convolutional models run
        assert upsample_conv(xl, weight, b).is_contiguous(memory_format=torch.channels_last)


def test_phase_kernels_index_algebra():
    """Phase (a, b)'s 2x2 kernel sums the 3x3 taps per axis as A_0 = [[1,0,0],[0,1,1]], A_1 = [[1,1,0],[0,0,1]]."""
    weight = torch.arange(9.0, dtype=torch.float64).view(1, 1, 3, 3)  # w[k, l] = 3k + l
    kernels = phase_kernels(weight).view(2, 2, 2, 2)  # [a, b, r, s]
    a0, a1 = torch.tensor([[1.0, 0, 0], [0, 1, 1]]), torch.tensor([[1.0, 1, 0], [0, 0, 1]])
    collapse = (a0.double(), a1.double())
    for a in (0, 1):
        for b in (0, 1):
            torch.testing.assert_close(kernels[a, b], collapse[a] @ weight[0, 0] @ collapse[b].T)
    assert kernels[0, 0].tolist() == [[0.0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]]
    # every 3x3 tap is used once per phase: each phase's taps sum to the kernel's sum
    assert kernels.sum(dim=(2, 3)).eq(weight.sum()).all()


def test_module_shares_parameters_and_state_dict_of_the_conv():
    conv = nn.Conv2d(6, 4, 3, padding=1).double()
    layer = UpsampleConv.from_conv(conv)
    assert layer.weight is conv.weight and layer.bias is conv.bias
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    layer(x).square().sum().backward()
    grad = conv.weight.grad.clone()
    conv.weight.grad = None
    conv(F.interpolate(x, scale_factor=2)).square().sum().backward()
    torch.testing.assert_close(grad, conv.weight.grad, rtol=0, atol=1e-12)  # the 3x3 weight learns the same
    for bad in (nn.Conv2d(6, 4, 3, padding=0), nn.Conv2d(6, 4, 3, padding=1, stride=2), nn.Conv2d(6, 4, 4)):
        with pytest.raises(ValueError, match="3x3 convolution with padding 1"):
            UpsampleConv.from_conv(bad)


def test_dcgan_generator_rewritten_keeps_checkpoint_and_function():
    torch.manual_seed(0)
    generator = DCGANGenerator(16, 1, 32, width=16).double()
    rewritten = DCGANGenerator(16, 1, 32, width=16).double()
    rewritten.load_state_dict(generator.state_dict())
    assert rewrite_upsample_convs(rewritten.conv_blocks) == 2
    assert sum(isinstance(m, UpsampleConv) for m in rewritten.modules()) == 2
    state, new_state = generator.state_dict(), rewritten.state_dict()
    assert list(new_state) == list(state)  # the same keys in the same order: checkpoints load either way
    assert all(new_state[k].shape == v.shape and torch.equal(new_state[k], v) for k, v in state.items())
    assert sum(p.numel() for p in rewritten.parameters()) == sum(p.numel() for p in generator.parameters())
    z = torch.randn(4, 16, dtype=torch.float64)
    out, ref = rewritten(z), generator(z)  # training mode: BatchNorm on batch statistics
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (name, p), q in zip(rewritten.named_parameters(), generator.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=name)
    # bilinear upsampling (SNGAN's generator) is not the identity's: left alone
    assert rewrite_upsample_convs(DCGANGenerator(16, 1, 32, width=16, upsampling="bilinear").conv_blocks) == 0


class _TF32(torch.autograd.Function):
    """Round a float32 tensor to TF32's 10 mantissa bits (to nearest, ties away from zero), straight through in
    the backward pass: what a TF32 convolution does to its two operands before multiplying them."""

    @staticmethod
    def forward(ctx, t):
        bits = t.contiguous().view(torch.int32)
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32).view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return grad


def tf32(t: torch.Tensor) -> torch.Tensor:
    return _TF32.apply(t)


def test_tf32_emulation_rounds_to_10_mantissa_bits():
    t = torch.tensor([1.0 + 2**-10, 1.0 + 2**-11 + 2**-12, 1.0 + 2**-12, -3.0 - 2**-9 - 2**-13])
    assert tf32(t).tolist() == [1.0 + 2**-10, 1.0 + 2**-10, 1.0, -3.0 - 2**-9]
    x = torch.randn(1000)
    assert ((tf32(x) - x).abs() <= x.abs() * 2**-11).all()  # half a unit in the 10th place


def _differences(shape, seed):
    """Largest differences from the float64 direct path, relative to its largest magnitude, of the output and
    the gradients (input, weight, bias) of one step: the float32 direct path, the float32 rewrite, the direct
    path with TF32 operands and the rewrite with TF32 operands (its phase kernels rounded)."""
    x, weight, b, upstream = _case(shape, torch.float64, seed=seed)
    ref = _step(direct, x, weight, b, upstream)
    x32, w32, b32, u32 = (t.float() for t in (x, weight, b, upstream))
    routes = {
        "direct fp32": _step(direct, x32, w32, b32, u32),
        "phase fp32": _step(upsample_conv, x32, w32, b32, u32),
        "direct tf32": _step(lambda x, w, b: direct(tf32(x), tf32(w), b), x32, w32, b32, tf32(u32)),
        "phase tf32": _step(lambda x, w, b: phase_conv(tf32(x), tf32(phase_kernels(w)), b), x32, w32, b32, tf32(u32)),
    }

    def rel(t, r):
        return ((t.double() - r).abs().max() / r.abs().max()).item()

    out = {}
    for name, (o, grads) in routes.items():
        out[name] = [rel(o, ref[0])] + [rel(g, r) for g, r in zip(grads, ref[1], strict=True)]
    # the rewrite against the direct path, both in float32, and TF32's own change of the direct path
    (o, g), (do, dg), (to, tg) = routes["phase fp32"], routes["direct fp32"], routes["direct tf32"]
    out["phase vs direct fp32"] = [rel(o, do.double())] + [rel(a, b.double()) for a, b in zip(g, dg, strict=True)]
    out["tf32 vs fp32 direct"] = [rel(to, do.double())] + [rel(a, b.double()) for a, b in zip(tg, dg, strict=True)]
    return out


def test_rewrite_differs_from_direct_by_far_less_than_tf32_does():
    """At a DCGAN-like shape (the 128 -> 64 layer, 16 x 16 pixels), float32, one step: output, input, weight
    and bias gradients. Printed figures are recorded in docs/performance.md."""
    diffs = _differences((2, 128, 64, 16, 16), seed=3)
    for name, values in diffs.items():
        print(f"{name:22s} " + "  ".join(f"{v:.1e}" for v in values))
    rewrite, tf32_change = diffs["phase vs direct fp32"], diffs["tf32 vs fp32 direct"]
    for what, r, t in zip(("output", "grad input", "grad weight", "grad bias"), rewrite, tf32_change, strict=True):
        if what == "grad bias":  # the bias gradient sums the upstream gradient alone: no multiplications
            continue
        assert r < t / 10, f"{what}: rewrite {r:.1e} against TF32 {t:.1e}"
    # under TF32 (as it would run on a GPU) the rewrite stays as close to exact as the direct path does
    for r, d in zip(diffs["phase tf32"], diffs["direct tf32"], strict=True):
        assert r < 3 * d + 1e-7
