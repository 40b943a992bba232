"""Beyond the thesis' three models: WGAN-GP's gradient penalty, SNGAN's spectral norm and checkerboard-free
gradient, DiffAugment's operations, and tiny real runs of each that resume bit for bit."""

from __future__ import annotations

import functools
import json
import math
import signal
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.func import functional_call

from heartjobs.errors import JobInterrupted
from heartjobs.models import build_models
from heartjobs.models.penalty import gradient_penalty
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.defaults import AUGMENTATIONS
from heartjobs.spec.loading import load_spec
from heartjobs.store.checkpoint import list_checkpoints, load_generator
from heartjobs.store.prepared import PreparedSet
from heartjobs.system.stopping import StopRequest
from heartjobs.training.augment import OPERATIONS, DiffAugment
from heartjobs.training.loop import Trainer

from .conftest import assert_same_run, losses, uninterrupted_run, write_spec

CPU = torch.device("cpu")
# 12 images in batches of 2: six batches an epoch, so a stop lands inside one, and WGAN-GP's generator
# trains on batches 0 and 5 of each.
TINY = {"epochs": 3, "batch_size": 2, "sample_every": 3, "checkpoint_every": 1, "keep_checkpoints": 5, "device": "cpu"}
RUNS = {  # id: (model, extra [train] values)
    "wgan_gp": ("wgan_gp", {}),
    "sngan": ("sngan", {}),
    "dcgan_translation_cutout": ("dcgan", {"augment": "translation,cutout"}),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the gradient penalty ---


def _finite_difference_gradients(critic, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """d critic(x_i) / d x_i for each image i, pixel by pixel by central differences (no autograd)."""
    flat = x.detach().flatten(1)
    grads = torch.zeros_like(flat)
    with torch.no_grad():
        for k in range(flat.shape[1]):
            step = torch.zeros_like(flat)
            step[:, k] = h
            up, down = (critic((flat + s).view_as(x)).squeeze(1) for s in (step, -step))
            grads[:, k] = (up - down) / (2 * h)
    return grads


def test_gradient_penalty_equals_a_finite_difference_reference_and_differentiates_in_the_weights():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(9, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    real, fake = torch.randn(4, 1, 3, 3, dtype=torch.float64), torch.randn(4, 1, 3, 3, dtype=torch.float64)
    eps = torch.rand(4, 1, 1, 1, dtype=torch.float64)

    penalty = gradient_penalty(critic, real, fake, eps)
    x_hat = eps * real + (1 - eps) * fake
    norms = _finite_difference_gradients(critic, x_hat).norm(dim=1)
    expected = ((norms - 1) ** 2).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-7)
    # eps = 1 and eps = 0 put the penalty on the real and on the generated images themselves
    for ends, images in ((torch.ones_like(eps), real), (torch.zeros_like(eps), fake)):
        at = ((_finite_difference_gradients(critic, images).norm(dim=1) - 1) ** 2).mean()
        assert gradient_penalty(critic, real, fake, ends).item() == pytest.approx(at.item(), rel=1e-7)

    # the double backward: the penalty's gradient in a critic weight against central differences of it
    params = dict(critic.named_parameters())

    def penalty_of(weight: torch.Tensor) -> torch.Tensor:
        return gradient_penalty(
            lambda x: functional_call(critic, {**params, "1.weight": weight}, (x,)), real, fake, eps
        )

    weight = params["1.weight"].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(penalty_of, (weight,))


@pytest.mark.parametrize("critic_of", ["wgan_gp", "sngan", "dcgan"])
def test_the_penalty_double_backward_works_through_fully_connected_and_convolutional_critics(critic_of):
    # wgan_gp: the thesis' MLP critic (in-place LeakyReLU); sngan: a convolutional critic without BatchNorm;
    # dcgan: the thesis' discriminator with BatchNorm and Dropout (runs, though BatchNorm couples the images)
    torch.manual_seed(0)
    _, critic = build_models(critic_of, 16, 1, 8)
    real, fake = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    eps = torch.rand(4, 1, 1, 1)
    penalty = gradient_penalty(critic, real, fake, eps)
    penalty.backward()
    # every weight matrix gets a gradient through the input gradient; a bias may get none (the last layer's
    # never moves the input gradient, and through LeakyReLU no bias does: its second derivative is 0)
    weights = [p for p in critic.parameters() if p.dim() > 1]
    assert torch.isfinite(penalty) and all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)
    if critic_of == "wgan_gp":  # per-image gradients by torch.func agree with the batch's autograd
        x_hat = eps * real + (1 - eps) * fake
        per_image = torch.func.vmap(torch.func.grad(lambda x: critic(x.unsqueeze(0)).squeeze()))(x_hat)
        reference = ((per_image.flatten(1).norm(dim=1) - 1) ** 2).mean()
        assert penalty.item() == pytest.approx(reference.item(), rel=1e-5)


# --- spectral norm, and where the thesis DCGAN's checkerboard comes from ---


def _spectral_norms(discriminator: nn.Module) -> list[tuple[float, float]]:
    """(largest singular value of the normalised weight, of the raw one), each reshaped to out x in*k*k, for
    every normalised layer; in eval mode, where reading .weight runs no power iteration."""
    discriminator.eval()
    norms = []
    for module in discriminator.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            pair = (module.weight, module.parametrizations.weight.original)
            norms.append(tuple(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item() for w in pair))
    discriminator.train()
    return norms


def test_spectral_norm_keeps_every_discriminator_weight_near_unit_spectral_norm_while_training(tmp_path, prepared32):
    spec = load_spec(write_spec(tmp_path, "sn", "sngan", prepared32, epochs=2, batch_size=4, device="cpu"))
    trainer = Trainer(spec, PreparedSet.open(prepared32).tensor(), CPU)
    D = trainer.D
    assert not any(isinstance(m, nn.BatchNorm2d | nn.Dropout2d | nn.Sigmoid) for m in D.modules())
    assert len(_spectral_norms(D)) == 5  # four convolutions and the linear layer, all normalised
    for _ in range(2):
        trainer.train_epoch()  # 6 Adam steps of 2e-4 on weights of about 0.02: each moves them by ~1%
    during = _spectral_norms(D)
    print(f"largest singular values (normalised, raw) after 6 steps: {during}")
    # The estimate is one power iteration per forward pass (the paper's and PyTorch's), u^T W v <= sigma:
    # it can only lag behind from below, so the normalised weight's norm is >= 1, and here within 30 %.
    assert all(0.999 < normalised < 1.3 for normalised, _ in during), during
    assert all(abs(raw - 1) > 0.1 for _, raw in during)  # the normalisation does something
    # with the weights held, the power iteration catches up: the norm is 1
    x = PreparedSet.open(prepared32).tensor()[:4].float() / 127.5 - 1
    with torch.no_grad():
        for _ in range(50):
            D(x)
    caught_up = _spectral_norms(D)
    assert all(abs(normalised - 1) < 0.05 for normalised, _ in caught_up), caught_up


def _gradient_parity(model: str, seeds: range) -> torch.Tensor:
    """The energy of D's input gradient at the four pixel parities (even/odd row x even/odd column),
    relative to their mean, averaged over freshly initialised discriminators."""
    classes = []
    for seed in seeds:
        torch.manual_seed(seed)
        _, discriminator = build_models(model, 32, 1, 8)
        discriminator.eval()
        x = torch.randn(16, 1, 32, 32, requires_grad=True)
        discriminator(x).sum().backward()
        energy = x.grad[:, 0, 4:-4, 4:-4] ** 2  # away from the zero padding's borders
        parity = torch.stack([energy[:, i::2, j::2].mean() for i in (0, 1) for j in (0, 1)])
        classes.append(parity / parity.mean())
    return torch.stack(classes).mean(0)


def test_the_thesis_discriminator_sends_a_checkerboard_gradient_and_sngans_does_not():
    # DCGAN's 3x3 stride-2 convolutions reach every other pixel twice as often in each axis; SNGAN's 4x4
    # ones reach all alike (heartjobs/models/sngan.py)
    thesis, sngan = _gradient_parity("dcgan", range(10)), _gradient_parity("sngan", range(10))
    print(f"gradient energy by pixel parity: dcgan {thesis.tolist()}, sngan {sngan.tolist()}")
    assert (thesis.max() / thesis.min()).item() > 2.5
    assert (sngan.max() / sngan.min()).item() < 1.4


def test_sngans_generator_resizes_bilinearly_and_the_thesis_dcgan_by_nearest_neighbour():
    for model, mode in (("dcgan", "nearest"), ("sngan", "bilinear")):
        generator, _ = build_models(model, 32, 1, 8)
        assert {m.mode for m in generator.modules() if isinstance(m, nn.Upsample)} == {mode}
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())


# --- DiffAugment ---


def test_the_spec_names_every_augmentation_the_trainer_has():
    assert tuple(OPERATIONS) == AUGMENTATIONS


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_is_differentiable_and_reproducible_from_its_generator(name):
    operation = OPERATIONS[name]
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda images: operation(images, _gen(1)), (x,))
    assert torch.equal(operation(x, _gen(1)), operation(x, _gen(1)))
    assert not torch.equal(operation(x, _gen(1)), operation(x, _gen(2)))
    generator = _gen(3)
    first, second = operation(x, generator), operation(x, generator)  # the stream moves on
    assert not torch.equal(first, second)


def test_a_policy_chains_its_operations_and_the_gradient_reaches_the_input():
    x = torch.randn(6, 1, 16, 16, requires_grad=True)
    augment = DiffAugment(",".join(AUGMENTATIONS), _gen(0))
    out = augment(x)
    out.sum().backward()
    assert out.shape == x.shape and x.grad.abs().sum() > 0
    again = DiffAugment(",".join(AUGMENTATIONS), _gen(0))(x)
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="unknown augmentation 'saturation'"):
        DiffAugment("translation,saturation", _gen(0))


def test_the_augmentations_have_the_reference_ranges():
    n, size = 200, 16
    x = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size).repeat(n, 1, 1, 1) + 1
    # translation: whole pixels, at most size/8 = 2 in each axis, zeros coming in
    shifted = OPERATIONS["translation"](x, _gen(0))
    seen = set()
    for image in shifted[:, 0]:
        first = image[image > 0][0].item() - 1  # the input pixel that landed at the first non-zero place
        position = (image > 0).nonzero()[0]
        dy, dx = int(first // size) - position[0].item(), int(first % size) - position[1].item()
        seen.add((dy, dx))
        assert max(abs(dy), abs(dx)) <= 2
        padded = image.new_zeros(size + 4, size + 4)
        padded[2 : 2 + size, 2 : 2 + size] = x[0, 0]
        assert torch.equal(image, padded[2 + dy : 2 + dy + size, 2 + dx : 2 + dx + size])
    assert {dy for dy, _ in seen} == {-2, -1, 0, 1, 2} and {dx for _, dx in seen} == {-2, -1, 0, 1, 2}
    # cutout: one square of side size/2, clipped at the borders
    cut = OPERATIONS["cutout"](torch.ones(n, 1, size, size), _gen(0))[:, 0] == 0
    for mask in cut:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8 and mask.sum() == len(rows) * len(cols)
    assert (cut.sum((1, 2)) == 64).float().mean() > 0.2  # often whole
    # brightness: one offset per image in [-0.5, 0.5)
    y = torch.rand(n, 1, size, size) * 2 - 1
    offsets = (OPERATIONS["brightness"](y, _gen(0)) - y).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets))
    assert offsets.min() >= -0.5 and offsets.max() < 0.5 and offsets.max() - offsets.min() > 0.9
    # contrast: the deviation from each image's mean scaled by one factor in [0.5, 1.5), the mean kept
    out = OPERATIONS["contrast"](y, _gen(0))
    deviation = y - y.mean((1, 2, 3), keepdim=True)
    factors = ((out - y.mean((1, 2, 3), keepdim=True)) * deviation).sum((1, 2, 3)) / deviation.square().sum((1, 2, 3))
    assert torch.allclose(out - y.mean((1, 2, 3), keepdim=True), factors.view(n, 1, 1, 1) * deviation, atol=1e-5)
    assert factors.min() >= 0.5 - 1e-5 and factors.max() < 1.5 and factors.max() - factors.min() > 0.9
    assert torch.allclose(out.mean((1, 2, 3)), y.mean((1, 2, 3)), atol=1e-6)


# --- tiny runs: train, checkpoint, stop, resume ---


class _StopInEpoch(StopRequest):
    """The stop request a SIGTERM would set (run_job's `stop`), arriving deterministically: at the `batch`-th
    check after the run logged `epochs` epochs (losses.jsonl, written before that epoch's checkpoint is
    handed to the background writer), i.e. just before that batch of the next epoch."""

    def __init__(self, run_dir: Path, epochs: int, batch: int):
        super().__init__()
        self.losses, self.epochs, self.checks_left = run_dir / "losses.jsonl", epochs, batch

    @property
    def signal(self) -> int | None:
        if super().signal is None and self.losses.exists() and len(losses(self.losses.parent)) >= self.epochs:
            self.checks_left -= 1
            if self.checks_left < 0:
                self.request(signal.SIGTERM)
        return super().signal


@pytest.mark.parametrize("run", list(RUNS))
def test_a_tiny_run_trains_checkpoints_and_resumes_bit_identical(tmp_path, tmp_path_factory, prepared32, run):
    model, extra = RUNS[run]
    reference = uninterrupted_run(tmp_path_factory, prepared32, model=model, name=run, **TINY, **extra)
    entries = losses(reference)
    assert [e["epoch"] for e in entries] == [1, 2, 3]
    assert all(math.isfinite(e["d_loss"]) and math.isfinite(e["g_loss"]) for e in entries)
    generator, meta = load_generator(reference / "generator.pt")
    assert meta["model"] == model and generator(torch.randn(2, 100)).shape == (2, 1, 32, 32)
    state = torch.load(list_checkpoints(reference / "checkpoints")[-1], weights_only=True)
    assert ("augment" in state["rng"]) == ("augment" in extra)  # the stream only where it is drawn from

    spec = write_spec(tmp_path, run, model, prepared32, **TINY, **extra)
    run_dir = tmp_path / "artifacts" / run / "v0001"
    stop = _StopInEpoch(run_dir, epochs=1, batch=3)
    with pytest.raises(JobInterrupted):
        run_job(spec, stop=stop)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    assert list_checkpoints(run_dir / "checkpoints")[-1].name == "epoch_0001_batch_0003.pt"

    assert run_job(spec, resume=True) == run_dir  # continued in place, from the mid-epoch checkpoint
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert_same_run(run_dir, reference)


def test_wgan_gp_with_every_augmentation_continues_bit_identical_mid_epoch(tmp_path, prepared32):
    # the penalty's interpolation weights and the augmentations' draws, stopped inside an epoch
    from heartjobs.store.checkpoint import load_checkpoint, save_checkpoint
    from heartjobs.training.loop import Interrupted

    augment = ",".join(AUGMENTATIONS)
    spec = load_spec(write_spec(tmp_path, "mid", "wgan_gp", prepared32, epochs=2, batch_size=2, augment=augment))
    images = PreparedSet.open(prepared32).tensor()
    reference = Trainer(spec, images, CPU)
    while reference.epoch < 2:
        reference.train_epoch()
    stopped = Trainer(spec, images, CPU)
    asked = []
    with pytest.raises(Interrupted):
        stopped.train_epoch(lambda: asked.append(1) or len(asked) > 4)
    path = save_checkpoint(tmp_path / "checkpoints", stopped.state_dict(), spec.spec_hash, keep=1)
    resumed = Trainer(spec, images, CPU)
    resumed.load_state_dict(load_checkpoint(path, spec.spec_hash))
    while resumed.epoch < 2:
        resumed.train_epoch()
    for a, b in ((resumed.G, reference.G), (resumed.D, reference.D)):
        for key, value in b.state_dict().items():
            assert torch.equal(a.state_dict()[key], value), key
    strip = [[(e["epoch"], e["d_loss"], e["g_loss"]) for e in t.history] for t in (resumed, reference)]
    assert strip[0] == strip[1] and len(strip[0]) == 2


@pytest.mark.parametrize("switch", ["compile", "bf16"])
@pytest.mark.parametrize("model", ["wgan_gp", "sngan"])
def test_the_new_models_train_under_the_speed_switches(tmp_path, prepared32, monkeypatch, model, switch):
    # compile: AOTAutograd graphs have no double backward, so WGAN-GP's penalty must go through the eager
    # critic; SNGAN's parametrized weights go through the graphs (aot_eager: the graphs inductor would get,
    # without generating C++ on this CPU). bf16: the losses and the penalty stay float32. With augmentation.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    counters.clear()
    base = {"epochs": 1, "batch_size": 4, "device": "cpu", "augment": "translation"}
    images = PreparedSet.open(prepared32).tensor()
    trained, losses_of = {}, {}
    for name, train in (("plain", base), ("switched", {**base, switch: True})):
        trainer = Trainer(load_spec(write_spec(tmp_path, name, model, prepared32, **train)), images, CPU)
        stats = trainer.train_epoch()
        assert math.isfinite(stats.d_loss) and math.isfinite(stats.g_loss)
        trained[name], losses_of[name] = trainer.G.state_dict(), (stats.d_loss, stats.g_loss)
    assert losses_of["switched"] == pytest.approx(losses_of["plain"], rel=1e-3 if switch == "compile" else 5e-2)
    # Adam with beta1 = 0 moves a weight by up to lr per step whatever its gradient's size, so a rounding
    # difference in a near-zero gradient can flip a step: no weight may differ by more than 2 lr per step
    # (3 steps); test_training.py's GAN, with momentum, agrees to 1e-5
    bound = 2 * 3 * load_spec(tmp_path / "plain.toml").train.lr
    for key, value in trained["plain"].items():
        difference = (value.float() - trained["switched"][key].float()).abs().max().item()
        assert difference <= (bound if switch == "compile" else 5e-3), (key, difference)
    if switch == "compile":  # the steps really ran through compiled graphs
        assert counters["stats"]["unique_graphs"] > 0


def test_architecture_widths_train_and_rebuild(tmp_path, prepared32):
    spec = write_spec(tmp_path, "narrow", "gan", prepared32, epochs=1, batch_size=4, device="cpu")
    spec.write_text(spec.read_text() + "[architecture]\nhidden = [32, 64, 32]\n")
    run_dir = run_job(spec)
    generator, meta = load_generator(run_dir / "generator.pt")
    assert meta["hidden"] == [32, 64, 32]
    widths = [m.out_features for m in generator.modules() if isinstance(m, nn.Linear)]
    assert widths == [32, 64, 32, 32 * 32]


@pytest.mark.slow
def test_a_new_model_with_augmentation_is_measured_like_the_thesis_models(tmp_path, prepared32):
    # the same runner and the same measurement: FID and KID (untrained Inception, 64-d) and FRD
    measure = {"weights": "untrained", "dims": 64, "n_generated": 24, "repeats": 1, "frd_n": 16}
    measure |= {"batch_size": 12, "kid_subset_size": 12, "kid_subsets": 5}
    spec = write_spec(
        tmp_path, "measured", "sngan", prepared32, eval=measure, epochs=2, batch_size=4, device="cpu", augment="cutout"
    )
    run_dir = run_job(spec)
    report = json.loads((run_dir / "fid.json").read_text())
    assert math.isfinite(report["fid_mean"]) and report["fid_mean"] > 0
    assert math.isfinite(report["kid_mean"]) and math.isfinite(report["frd"]["mean"])
