"""StyleGAN2's networks (heartjobs.models.stylegan2) against the reference's facts and direct computations:
parameter counts at 256 px equal NVlabs/stylegan2-ada-pytorch's; the modulated convolution equals a plain
convolution per sample with its modulated, demodulated weight; FIR up/downsampling equals zero insertion,
padding and a 2-D convolution done in numpy/scipy; convolution with resampling equals its generic
composition; the networks at 32 px run forwards and backwards (also twice, as R1 does), deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from heartjobs.models.stylegan2 import StyleGAN2Config, build_stylegan2, modulated_conv2d
from heartjobs.models.stylegan2.ops import conv2d_resample, downsample2d, setup_filter, upfirdn2d, upsample2d

# at 32 px: 32 channels at 4-8 px, 16 at 16, 8 at 32
TINY = StyleGAN2Config(size=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32, mbstd_group=2)


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("config", "generator", "mapping", "discriminator"),
    [
        (StyleGAN2Config.paper256(), 24_762_452, 2_101_248, 24_000_961),
        (StyleGAN2Config.auto(256), 23_186_516, 525_312, 24_000_961),
    ],
    ids=["paper256", "auto"],
)
def test_parameter_counts_equal_the_reference(config, generator, mapping, discriminator):
    with torch.device("meta"):
        G, D = build_stylegan2(config)
    assert (_trainable(G), _trainable(G.mapping), _trainable(G.synthesis), _trainable(D)) == (
        generator,
        mapping,
        22_661_204,
        discriminator,
    )
    assert all(p.requires_grad for p in [*G.parameters(), *D.parameters()])
    assert G.num_ws == 14  # two per block from 8 px to 256 px, one at 4 px, the last ToRGB's


def _direct_modconv(x, weight, styles, demodulate, noise=None):
    """Per sample: the weight scaled by its styles per input channel, each output channel divided by its
    norm, then an ordinary 3x3 convolution."""
    outputs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        outputs.append(F.conv2d(x[n : n + 1], w, padding=1))
    out = torch.cat(outputs)
    return out if noise is None else out + noise


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_equals_a_direct_computation(fused, demodulate):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 9, 9, generator=gen, dtype=torch.float64)
    weight = torch.randn(7, 5, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(3, 5, generator=gen, dtype=torch.float64) + 1
    noise = torch.randn(3, 1, 9, 9, generator=gen, dtype=torch.float64)
    got = modulated_conv2d(x, weight, styles, noise=noise, padding=1, demodulate=demodulate, fused_modconv=fused)
    expected = _direct_modconv(x, weight, styles, demodulate, noise)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    if demodulate:  # each output channel of a demodulated weight has unit norm: the outputs keep unit scale
        assert 0.5 < (got - noise).std().item() / x.std().item() < 2


def test_modulated_conv2d_fused_equals_separate_when_upsampling():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 6, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    kwargs = {"up": 2, "padding": 1, "resample_filter": f, "flip_weight": False}
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kwargs)
    separate = modulated_conv2d(x, weight, styles, fused_modconv=False, **kwargs)
    assert fused.shape == (2, 3, 12, 12)
    torch.testing.assert_close(fused, separate, rtol=1e-10, atol=1e-10)


def _upfirdn_numpy(image, f, up, down, pad):
    """scipy.signal.upfirdn's steps in 2-D: insert up-1 zeros after each pixel, pad (x0, x1, y0, y1), keep
    the 'valid' part of the true 2-D convolution with f, keep every down-th pixel."""
    h, w = image.shape
    stuffed = np.zeros((h * up, w * up))
    stuffed[::up, ::up] = image
    x0, x1, y0, y1 = pad
    padded = np.pad(stuffed, ((y0, y1), (x0, x1)))
    return convolve2d(padded, f, mode="valid")[::down, ::down]


def _per_channel(x, f, up, down, pad):
    return np.stack([np.stack([_upfirdn_numpy(channel, f, up, down, pad) for channel in sample]) for sample in x])


def test_fir_upsampling_and_downsampling_equal_a_direct_computation():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 8))
    # asymmetric taps, so a flipped filter would show
    for taps in ([1, 3, 3, 1], [1, 2, 5, 3]):
        f = setup_filter(taps)
        f_np = f.double().numpy()
        xt = torch.from_numpy(x)

        up = upfirdn2d(xt, f, up=2, padding=[2, 1, 2, 1]).numpy()
        np.testing.assert_allclose(up, _per_channel(x, f_np, 2, 1, (2, 1, 2, 1)), atol=1e-12)

        down = upfirdn2d(xt, f, down=2, padding=[1, 1, 1, 1]).numpy()
        np.testing.assert_allclose(down, _per_channel(x, f_np, 1, 2, (1, 1, 1, 1)), atol=1e-12)

        # the wrappers: padded to exactly 2x and 1/2x; upsampling scaled by 4 for the zeros it inserts
        up2 = upsample2d(xt, f).numpy()
        assert up2.shape == (2, 3, 16, 16)
        np.testing.assert_allclose(up2, 4 * _per_channel(x, f_np, 2, 1, (2, 1, 2, 1)), atol=1e-12)
        down2 = downsample2d(xt, f).numpy()
        assert down2.shape == (2, 3, 4, 4)
        np.testing.assert_allclose(down2, _per_channel(x, f_np, 1, 2, (1, 1, 1, 1)), atol=1e-12)

    # a constant image stays constant away from the zero-padded border
    ones = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(upsample2d(ones, f)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12, dtype=torch.float64))
    torch.testing.assert_close(downsample2d(ones, f)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2, dtype=torch.float64))


@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv2d_resample_fast_paths_equal_the_generic_composition(kernel, flip_weight):
    """The transposed-convolution (up) and strided-convolution (down) paths against upsample, convolve,
    downsample done one after the other, with the same padding."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 4, kernel, kernel, generator=gen, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    p = kernel // 2
    conv = (lambda t: F.conv2d(t, w)) if flip_weight else (lambda t: F.conv2d(t, w.flip([2, 3])))

    up = conv2d_resample(x, w, f=f, up=2, padding=p, flip_weight=flip_weight)
    expected_up = conv(upfirdn2d(x, f, up=2, padding=[p + 2, p + 1, p + 2, p + 1], gain=4))
    assert up.shape == (2, 5, 16, 16)
    torch.testing.assert_close(up, expected_up, rtol=1e-10, atol=1e-10)

    down = conv2d_resample(x, w, f=f, down=2, padding=p, flip_weight=flip_weight)
    expected_down = upfirdn2d(conv(upfirdn2d(x, None, padding=p + 1)), f, down=2)
    assert down.shape == (2, 5, 4, 4)
    torch.testing.assert_close(down, expected_down, rtol=1e-10, atol=1e-10)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_stylegan2(TINY)


def _noise_on(G):
    """noise_strength starts at 0 (as in the reference): give it weight, so the noise shows."""
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)


def test_networks_run_forwards_and_backwards_at_32_px():
    G, D = _tiny()
    z = torch.randn(4, TINY.z_dim)
    img = G(z)
    assert img.shape == (4, 1, 32, 32) and torch.isfinite(img).all()
    logits = D(img)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    for name, p in [*G.named_parameters(prefix="G"), *D.named_parameters(prefix="D")]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

    # R1's double backward: a penalty on D's input gradient trains every weight of D (the output bias
    # does not move that gradient, so it gets none)
    D.zero_grad()
    real = torch.randn(4, 1, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    grad.square().sum().backward()
    for name, p in D.named_parameters():
        if name != "b4.out.bias":
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("weight"):
            assert p.grad.abs().sum() > 0, name


def test_mapping_and_synthesis_separately():
    G, _ = _tiny()
    z = torch.randn(2, TINY.z_dim)
    ws = G.mapping(z, None)
    assert ws.shape == (2, G.num_ws, TINY.w_dim) and G.num_ws == 8
    assert torch.equal(ws[:, 0], ws[:, -1])  # one w broadcast to every layer

    # training mode tracks w_avg (except for the mixing latents); truncation psi 0 is w_avg itself
    G.train()
    before = G.mapping.w_avg.clone()
    G.mapping(z, None, skip_w_avg_update=True)
    assert torch.equal(G.mapping.w_avg, before)
    G.mapping(z, None)
    assert not torch.equal(G.mapping.w_avg, before)
    G.eval()
    truncated = G.mapping(z, None, truncation_psi=0)
    torch.testing.assert_close(truncated, G.mapping.w_avg.expand_as(truncated))
    cut = G.mapping(z, None, truncation_psi=0, truncation_cutoff=3)
    assert torch.equal(cut[:, 3:], ws[:, 3:]) and torch.equal(cut[:, :3], truncated[:, :3])

    # fused (inference) and separate (training) modulation give the same images
    _noise_on(G)
    fused = G.synthesis(ws, noise_mode="const", fused_modconv=True)
    separate = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(fused, separate, rtol=1e-4, atol=1e-5)
    assert not torch.equal(fused, G.synthesis(ws, noise_mode="none"))


def test_same_seed_same_networks_and_images():
    z = torch.randn(2, TINY.z_dim)
    images = []
    for _ in range(2):
        G, D = _tiny(seed=5)
        G.eval()
        _noise_on(G)
        img = G.synthesis(G.mapping(z, None), noise_mode="const")
        images.append((img, D(img)))
    assert torch.equal(images[0][0], images[1][0]) and torch.equal(images[0][1], images[1][1])
    G2, _ = _tiny(seed=6)
    assert not torch.equal(G2.synthesis.b4.const, G.synthesis.b4.const)


def test_style_mixing_switches_latents_at_one_cutoff():
    G, D = _tiny()
    G.train()
    z = torch.randn(4, TINY.z_dim)
    with torch.no_grad():
        own = G.mapping(z, None, skip_w_avg_update=True)
    assert torch.equal(G.mixed_ws(z, 0.0), G.mapping(z, None))

    seen = set()
    for seed in range(6):
        ws = G.mixed_ws(z, 1.0, generator=torch.Generator().manual_seed(seed))
        same = [torch.equal(ws[:, i], own[:, i]) for i in range(G.num_ws)]
        cutoff = same.index(False)
        assert 1 <= cutoff < G.num_ws and all(same[:cutoff]) and not any(same[cutoff:])
        seen.add(cutoff)
        # the same generator state draws the same mix
        again = G.mixed_ws(z, 1.0, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(ws.detach(), again.detach())
    assert len(seen) > 1

    ws = G.mixed_ws(z, 0.9)
    D(G.synthesis(ws)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in G.parameters())


def test_minibatch_std_groups_a_batch_the_group_does_not_divide_by_its_largest_divisor():
    from heartjobs.models.stylegan2.networks import MinibatchStdLayer

    x = torch.randn(6, 4, 2, 2)
    layer = MinibatchStdLayer(group_size=4)
    out = layer(x)  # 6 images, groups of 4 do not divide them: groups of 3
    assert out.shape == (6, 5, 2, 2) and torch.equal(out, MinibatchStdLayer(group_size=3)(x))
