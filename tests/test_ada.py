"""ADA (heartjobs.training.ada): the one-channel 'bgc' pipeline against the reference's own outputs, each
operation alone, gradients, determinism and resume, and the controller that sets p."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heartjobs.training.ada import BGC, Ada, AdaController, AugmentPipe

FIXTURE = Path(__file__).parent / "fixtures" / "ada_reference.pt"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth(n: int, size: int, seed: int) -> torch.Tensor:
    """Band-limited images (four plane waves of at most 0.2 rad/px, amplitude 1 in all): where the sym6
    filter's resampling reproduces blits to within 0.02 (on white noise its phase error reaches 0.5)."""
    g = _gen(seed)
    axis = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    out = torch.zeros(n, size, size)
    for _ in range(4):
        f = torch.rand(n, 2, 1, 1, generator=g) * 0.4 - 0.2
        phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
        out += torch.cos(f[:, 0] * xx + f[:, 1] * yy + phase) / 4
    return out.unsqueeze(1)


def _blob(n: int, size: int, sigma: tuple[float, float] = (2.5, 2.5)) -> torch.Tensor:
    """n copies of a Gaussian blob (sigma x, sigma y in pixels) at the image centre, on 0."""
    c = (size - 1) / 2
    axis = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    blob = torch.exp(-((xx - c) ** 2) / (2 * sigma[0] ** 2) - (yy - c) ** 2 / (2 * sigma[1] ** 2))
    return blob.expand(n, 1, size, size).clone()


def _moments(images: torch.Tensor):
    """Per image: mass, centroid (x, y) and the 2x2 covariance of the intensity."""
    n, _, h, w = images.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    im = images[:, 0].double()
    mass = im.sum(dim=(1, 2))
    cx, cy = (im * xx).sum(dim=(1, 2)) / mass, (im * yy).sum(dim=(1, 2)) / mass
    dx, dy = xx - cx.view(n, 1, 1), yy - cy.view(n, 1, 1)
    cov = torch.stack(
        [(im * dx * dx).sum(dim=(1, 2)), (im * dx * dy).sum(dim=(1, 2)), (im * dy * dy).sum(dim=(1, 2))], dim=1
    ) / mass.view(n, 1)
    cov = torch.stack([cov[:, 0], cov[:, 1], cov[:, 1], cov[:, 2]], dim=1).view(n, 2, 2)
    return mass, torch.stack([cx, cy], dim=1), cov


def _only(op: str, x: torch.Tensor, seed: int = 3, p: float = 1.0) -> torch.Tensor:
    return AugmentPipe(p, {op: 1})(x, _gen(seed))


def _nearest(y: torch.Tensor, candidates: list[torch.Tensor]) -> tuple[int, float, float]:
    """Index of the candidate nearest to y, its largest absolute difference, and the runner-up's."""
    errors = sorted((float((y - c).abs().max()), i) for i, c in enumerate(candidates))
    return errors[0][1], errors[0][0], errors[1][0]


# --- the whole pipeline ---


@pytest.mark.parametrize("case", ["square_p07", "square_p1", "wide_p1"])
def test_bgc_matches_the_reference(case):
    """The fixture holds NVlabs/stylegan2-ada-pytorch d72cc7d's AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1,
    rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1) on one-channel
    images, its draws from the default CPU generator seeded as here (torch.manual_seed(seed) then
    pipe(images)): the same draws in the same order give the same images, to float rounding."""
    ref = torch.load(FIXTURE, weights_only=True)[case]
    out = AugmentPipe(ref["p"])(ref["images"], _gen(ref["seed"]))
    assert out.shape == ref["augmented"].shape
    assert torch.allclose(out, ref["augmented"], atol=3e-5, rtol=0)


def test_p0_is_the_identity_bit_for_bit_and_p1_changes_every_image():
    x = torch.randn(16, 1, 16, 16, generator=_gen(0))
    assert torch.equal(AugmentPipe(0.0)(x, _gen(1)), x)
    y = AugmentPipe(1.0)(x, _gen(1))
    assert y.shape == x.shape
    assert all(not torch.allclose(y[i], x[i], atol=1e-3) for i in range(16))


def test_draws_do_not_depend_on_p():
    """Every call draws the same numbers whatever p is, so the stream stays aligned as p moves."""
    x = torch.randn(4, 1, 16, 16, generator=_gen(0))
    states = []
    for p in (0.0, 0.4, 1.0):
        g = _gen(5)
        AugmentPipe(p)(x, g)
        states.append(g.get_state())
    assert all(torch.equal(states[0], s) for s in states[1:])


# --- each operation alone at p = 1 ---


def test_xflip_mirrors():
    x = _smooth(16, 16, 0)
    y = _only("xflip", x)
    kinds = []
    for i in range(16):
        if torch.equal(y[i], x[i]):  # not flipped: passed through untouched
            kinds.append(0)
            continue
        best, error, runner_up = _nearest(y[i], [x[i], x[i].flip(-1)])
        assert best == 1 and error < 0.02 and runner_up > 0.1
        kinds.append(1)
    assert set(kinds) == {0, 1}  # flip or not, each with probability 1/2 at p = 1


def test_rotate90_turns_by_quarter_turns():
    x = _smooth(16, 16, 1)
    y = _only("rotate90", x)
    turns = set()
    for i in range(16):
        best, error, runner_up = _nearest(y[i], [torch.rot90(x[i], k, dims=(-2, -1)) for k in range(4)])
        assert error < 0.02 and runner_up > 0.1
        turns.add(best)
    assert turns == {0, 1, 2, 3}


def test_xint_shifts_by_whole_pixels_with_reflection():
    """On white noise, so only the right shift with the right border fill matches (exactly, to rounding)."""
    size, reach = 16, 2  # round(0.125 * 16)
    x = torch.randn(16, 1, size, size, generator=_gen(2))
    y = _only("xint", x)
    padded = F.pad(x, [reach] * 4, mode="reflect")
    shifts = set()
    for i in range(16):
        candidates, offsets = [], []
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):  # content moved by (dx, dy): output(r, c) = input(r - dy, c - dx)
                candidates.append(padded[i, :, reach - dy : reach - dy + size, reach - dx : reach - dx + size])
                offsets.append((dx, dy))
        best, error, runner_up = _nearest(y[i], candidates)
        assert error < 1e-4 and runner_up > 0.5
        shifts.add(offsets[best])
    assert len(shifts) > 5 and any(dx and dy for dx, dy in shifts)
    # zero fill or wrapping around would not match: the reflected border is what came in
    zero_filled = F.pad(x[:, :, :, :-1], [1, 0, 0, 0])
    assert not any(torch.allclose(y[i], zero_filled[i], atol=1e-3) for i in range(16))


def test_scale_is_isotropic():
    x = _blob(16, 32)
    mass0, centre0, cov0 = _moments(x)
    mass, centre, cov = _moments(_only("scale", x))
    assert torch.allclose(centre, centre0, atol=0.05)
    s2 = torch.linalg.det(cov).sqrt() / torch.linalg.det(cov0).sqrt()  # the area factor, s^2
    assert torch.allclose(mass / mass0, s2, rtol=0.02)  # mass and spread grow together
    assert torch.allclose(cov[:, 0, 1], torch.zeros(16, dtype=torch.float64), atol=0.01)
    assert torch.allclose(cov[:, 0, 0], cov[:, 1, 1], rtol=0.01)  # still round
    assert (s2 - 1).abs().min() > 1e-3 and (s2 > 1).any() and (s2 < 1).any()


def test_rotate_keeps_shape_and_turns_it():
    x = _blob(16, 32, sigma=(3.0, 1.5))
    mass0, centre0, cov0 = _moments(x)
    mass, centre, cov = _moments(_only("rotate", x))
    assert torch.allclose(mass, mass0, rtol=0.01)
    # the sym6 filter is not symmetric: its sub-pixel delay cancels between up- and downsampling along the
    # same axis, not once the axes turn (the reference's x-flip moves an image by ~0.1 px the same way)
    assert torch.allclose(centre, centre0, atol=0.2)
    # within the blur of bilinear resampling, which widens the blob by a few per cent
    assert torch.allclose(torch.linalg.eigvalsh(cov), torch.linalg.eigvalsh(cov0), rtol=0.05)
    angle = 0.5 * torch.atan2(2 * cov[:, 0, 1], cov[:, 0, 0] - cov[:, 1, 1])
    assert angle.abs().max() > 0.5 and angle.std() > 0.3  # turned, by various angles


def test_aniso_keeps_area_and_changes_aspect():
    x = _blob(16, 32)
    mass0, centre0, cov0 = _moments(x)
    mass, centre, cov = _moments(_only("aniso", x))
    assert torch.allclose(mass, mass0, rtol=0.01)  # s * (1/s): area kept
    assert torch.allclose(centre, centre0, atol=0.05)
    assert torch.allclose(torch.linalg.det(cov), torch.linalg.det(cov0), rtol=0.02)
    aspect = cov[:, 0, 0] / cov[:, 1, 1]
    assert (aspect - 1).abs().min() > 1e-3 and (aspect > 1).any() and (aspect < 1).any()


def test_xfrac_moves_without_changing_shape():
    x = _blob(16, 32)
    mass0, centre0, cov0 = _moments(x)
    mass, centre, cov = _moments(_only("xfrac", x))
    moved = centre - centre0
    assert moved.abs().max() < 4 * 0.125 * 32 and (moved.abs() > 0.01).all()
    assert (moved.frac().abs() > 0.05).any()  # fractional, not whole pixels
    # where the blob stays clear of the border (beyond it, reflection brings its mirror image in)
    near = (moved.abs() < 6).all(dim=1)
    assert near.sum() >= 8
    assert torch.allclose(mass[near], mass0[near], rtol=0.01)
    assert torch.allclose(cov[near], cov0[near], rtol=0.05, atol=0.01)


def test_brightness_adds_one_offset_per_image():
    x = torch.randn(16, 1, 16, 16, generator=_gen(4))
    offset = _only("brightness", x) - x
    per_image = offset.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(offset, per_image.expand_as(offset), atol=1e-6)
    assert (per_image.abs() > 1e-4).all() and per_image.std() > 0.05


def test_contrast_scales_about_zero():
    x = torch.rand(16, 1, 16, 16, generator=_gen(5)) + 0.5  # away from 0, so the ratio is well defined
    ratio = _only("contrast", x) / x
    per_image = ratio.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(ratio, per_image.expand_as(ratio), rtol=1e-6)
    assert (per_image > 0).all() and (per_image - 1).abs().min() > 1e-4


def test_lumaflip_negates():
    x = torch.randn(16, 1, 16, 16, generator=_gen(6))
    y = _only("lumaflip", x)
    flipped = [torch.equal(y[i], -x[i]) for i in range(16)]
    assert all(f or torch.equal(y[i], x[i]) for i, f in enumerate(flipped))
    assert any(flipped) and not all(flipped)


def test_unknown_operation_and_shape_are_refused():
    with pytest.raises(ValueError, match="unknown ADA operation 'hue'"):
        AugmentPipe(1.0, {"hue": 1})
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        AugmentPipe(1.0)(torch.zeros(2, 3, 16, 16), _gen(0))


# --- gradients ---


def test_gradients_reach_the_images():
    x = torch.randn(8, 1, 16, 16, generator=_gen(7), requires_grad=True)
    weights = torch.randn(8, 1, 16, 16, generator=_gen(8))
    (AugmentPipe(1.0)(x, _gen(9)) * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_first_and_second_derivatives_match_finite_differences():
    """Second order too: R1 and WGAN-GP's penalty differentiate a gradient taken through the pipeline."""
    x = torch.randn(2, 1, 8, 8, generator=_gen(10), dtype=torch.float64, requires_grad=True)
    pipe = AugmentPipe(1.0)

    def augment(images):  # the same draws on every call
        return pipe(images, _gen(11)) ** 2  # squared: the second derivative is not zero

    assert torch.autograd.gradcheck(augment, (x,))
    assert torch.autograd.gradgradcheck(augment, (x,))


# --- determinism and resume ---


def test_same_seed_same_images():
    x = torch.randn(8, 1, 16, 16, generator=_gen(12))
    a, b = AugmentPipe(0.5)(x, _gen(13)), AugmentPipe(0.5)(x, _gen(13))
    assert torch.equal(a, b)
    assert not torch.equal(a, AugmentPipe(0.5)(x, _gen(14)))


def _drive(ada: Ada, steps: int, start: int) -> list[torch.Tensor]:
    """steps batches of augment + observe, the logits' signs a fixed function of the step."""
    outputs = []
    for step in range(start, start + steps):
        x = torch.randn(8, 1, 16, 16, generator=_gen(100 + step))
        outputs.append(ada(x))
        outputs.append(ada.p.clone())
        logits = torch.randn(8, 1, generator=_gen(200 + step)) + (1.0 if step % 7 < 5 else -1.0)
        ada.observe(logits, 8)
        outputs.append(ada.rt.clone() if ada.rt is not None else torch.tensor(float("nan")))
    return outputs


def test_resume_mid_interval_continues_bit_identically():
    straight = Ada(_gen(15), interval=4, kimg=0.2)
    expected = _drive(straight, 14, 0)

    first = Ada(_gen(15), interval=4, kimg=0.2)
    before = _drive(first, 6, 0)  # stops half-way into an interval, with signs accumulated
    buffer = io.BytesIO()
    torch.save({"ada": first.state_dict(), "augment": first.generator.get_state()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # what a checkpoint holds

    resumed = Ada(torch.Generator(), interval=4, kimg=0.2)
    resumed.generator.set_state(saved["augment"])
    resumed.load_state_dict(saved["ada"])
    after = _drive(resumed, 8, 6)
    assert len(before + after) == len(expected)
    for got, want in zip(before + after, expected, strict=True):
        assert torch.equal(got, want) or (got.isnan().all() and want.isnan().all())
    assert 0 < float(resumed.p) < 1  # p moved both ways during the run


# --- the controller ---


def _logits(n: int, positive: int) -> torch.Tensor:
    """n logits, the first `positive` of them positive: r_t = (2 * positive - n) / n."""
    return torch.cat([torch.full((positive, 1), 2.5), torch.full((n - positive, 1), -0.5)])


def test_p_rises_by_the_formula_when_d_overfits_and_falls_to_zero_when_not():
    ada = Ada(_gen(0))  # target 0.6, interval 4, 500 kimg: the reference's
    step = 8 * 4 / (500 * 1000)
    expected = torch.zeros((), dtype=torch.float32)
    assert ada.rt is None and float(ada.p) == 0
    for interval in range(3):  # r_t = 1 > 0.6: p rises by one step per interval
        for batch in range(4):
            ada.observe(_logits(8, 8), 8)
            if batch < 3:  # p moves only at the end of an interval
                assert torch.equal(ada.p, expected)
        expected = (expected + step).clamp(0, 1)
        assert torch.equal(ada.p, expected) and float(ada.rt) == 1.0
        assert float(ada.p) == pytest.approx(step * (interval + 1), abs=1e-9)
    for _ in range(5):  # r_t = 0.5 < 0.6: p falls by one step, then stays at 0
        for _ in range(4):
            ada.observe(_logits(8, 6), 8)
        expected = (expected - step).clamp(0, 1)
        assert torch.equal(ada.p, expected) and float(ada.rt) == 0.5
    assert float(ada.p) == 0.0


def test_p_is_clamped_at_1_and_the_step_counts_the_images_shown():
    ada = Ada(_gen(0), interval=2, kimg=0.01)  # 10 images take p from 0 to 1
    ada.observe(_logits(4, 4))  # batch size from the logits: 4
    ada.observe(_logits(3, 3))  # a smaller last batch: 7 images in this interval
    assert float(ada.p) == pytest.approx(0.7)
    for _ in range(2):
        ada.observe(_logits(4, 4))
    assert float(ada.p) == 1.0


def test_fixed_p_measures_rt_but_keeps_p():
    ada = Ada(_gen(0), fixed_p=0.3)
    for _ in range(8):
        ada.observe(_logits(8, 8), 8)
    assert float(ada.p) == pytest.approx(0.3) and float(ada.rt) == 1.0


def test_bad_settings_are_refused():
    for kwargs, message in [
        ({"target": 1.5}, "target"),
        ({"interval": 0}, "interval"),
        ({"kimg": 0}, "kimg"),
        ({"fixed_p": -0.1}, "fixed p"),
    ]:
        with pytest.raises(ValueError, match=message):
            Ada(_gen(0), **kwargs)
    with pytest.raises(ValueError, match="interval"):
        AdaController(torch.zeros(()), interval=0)


def _train_d(ada: Ada, reals: torch.Tensor, fakes_like_reals: bool, batches: int) -> list[float]:
    """A small MLP D trained with the logistic loss on augmented reals against augmented fakes; r_t after
    each interval."""
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(reals[0].numel(), 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    noise = _gen(1)
    history = []
    for _ in range(batches):
        real = reals if not fakes_like_reals else torch.randn(reals.shape, generator=noise)
        fake = torch.randn(reals.shape, generator=noise)
        real_logits, fake_logits = disc(ada(real)), disc(ada(fake))
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ada.observe(real_logits, real.shape[0])
        if ada.controller.batches % ada.controller.interval == 0:
            history.append(float(ada.rt))
    return history


def test_a_tiny_d_that_overfits_raises_p_and_one_that_cannot_lowers_it():
    reals = _smooth(8, 16, 20)  # eight fixed images: D memorises them against noise
    overfit = Ada(_gen(2), kimg=0.64)  # 32 images per interval: p moves 0.05 per interval
    rts = _train_d(overfit, reals, fakes_like_reals=False, batches=64)
    assert sum(rt > 0.6 for rt in rts) >= 8 and float(overfit.p) >= 0.3
    assert float(overfit.p) == pytest.approx(_replay(0.0, rts), abs=1e-6)

    blind = Ada(_gen(2), kimg=0.64)
    blind.load_state_dict({**blind.state_dict(), "p": torch.tensor(0.3)})
    rts = _train_d(blind, reals, fakes_like_reals=True, batches=40)  # reals and fakes alike: nothing to learn
    assert all(rt < 0.6 for rt in rts) and float(blind.p) == 0.0


def _replay(p: float, rts: list[float], step: float = 0.05) -> float:
    for rt in rts:
        p = min(max(p + math.copysign(step, rt - 0.6), 0.0), 1.0)
    return p


def test_every_bgc_operation_is_known():
    assert set(BGC) == {
        "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "lumaflip"
    }  # fmt: skip
