"""StyleGAN2-ADA as a model family (heartjobs.models.stylegan2.family): the reference's parameter counts, the
EMA, the R1 and path-length penalties against finite differences, and tiny runs at 32 px that train, stop,
resume bit for bit (SIGTERM in-process, SIGKILL of a real process) and are measured with the EMA generator;
ADA for the other families; the spec's checks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from heartjobs.errors import JobInterrupted
from heartjobs.models import Networks, build_networks, count_parameters
from heartjobs.models.stylegan2.family import EMAGenerator, path_lengths, r1_penalties
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.loading import load_spec
from heartjobs.store.checkpoint import list_checkpoints, load_generator

from .conftest import assert_same_run, cli, losses, wait_for, write_spec
from .test_beyond import _StopInEpoch

# small channel counts and a short mapping network, so a CPU trains it in seconds
SMALL = {"channel_base": 256, "channel_max": 32, "mapping_layers": 2, "mbstd_group": 4}
TINY = {
    "epochs": 3,
    "batch_size": 4,
    "latent_dim": 32,
    "sample_every": 3,
    "checkpoint_every": 1,
    "keep_checkpoints": 5,
    "device": "cpu",
}


def _spec(folder, name, prepared, eval=None, **train):
    folder.mkdir(parents=True, exist_ok=True)
    path = write_spec(folder, name, "stylegan2", prepared, eval=eval, **{**TINY, **train})
    path.write_text(path.read_text() + "[architecture]\n" + "".join(f"{k} = {v}\n" for k, v in SMALL.items()))
    return path


@pytest.mark.parametrize(
    ("knobs", "generator", "mapping", "discriminator"),
    [
        ({}, 24_762_452, 2_101_248, 24_000_961),  # the reference's paper256
        ({"mapping_layers": 2, "mbstd_group": 4}, 23_186_516, 525_312, 24_000_961),  # its auto at 256 px
    ],
)
def test_parameter_counts_at_256_px_equal_the_reference(knobs, generator, mapping, discriminator):
    with torch.device("meta"):
        G, D = build_networks(Networks(model="stylegan2", size=256, channels=1, latent_dim=512, **knobs))
    assert isinstance(G, EMAGenerator)
    assert (count_parameters(G), count_parameters(G.net.mapping), count_parameters(D)) == (
        generator,
        mapping,
        discriminator,
    )
    # the average is held as buffers: not trained, not counted, but in the state_dict (checkpoints, generator.pt)
    assert sum(b.numel() for b in G.ema.buffers()) >= generator
    assert all(f"ema.{key}" in G.state_dict() for key in G.net.state_dict())


def test_the_ema_follows_the_trained_generator_with_the_reference_half_life():
    torch.manual_seed(0)
    G, _ = build_networks(Networks(model="stylegan2", size=16, channels=1, latent_dim=8, **SMALL))
    before = {k: v.clone() for k, v in G.ema.named_buffers()}
    with torch.no_grad():
        for p in G.net.parameters():
            p.add_(1.0)
    G.update_ema(batch=4, images_shown=10_000, ema_kimg=0.01, ema_rampup=0.0)
    beta = 0.5 ** (4 / 10)  # half-life 10 images
    for name, p in G.net.named_parameters():
        assert torch.allclose(G.ema.get_buffer(name), p.detach().lerp(before[name], beta), atol=1e-6), name
    # the ramp-up shortens the half-life early on: 100 images shown x 0.05 = 5 images
    G.update_ema(batch=4, images_shown=100, ema_kimg=20.0, ema_rampup=0.05)
    name, p = next(iter(G.net.named_parameters()))
    assert torch.allclose(
        G.ema.get_buffer(name), p.detach().lerp(before[name].lerp(p.detach(), 1 - beta), 0.5 ** (4 / 5))
    )
    # eval mode generates with the average and its fixed noise (a function of z alone), training mode with the
    # trained network
    z = torch.randn(2, 8)
    G.eval()
    assert torch.equal(G(z), G(z)) and torch.equal(G(z), G.ema(z, noise_mode="const"))
    assert not torch.equal(G(z), G.net(z, noise_mode="const"))


def _finite_difference_gradient(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    flat, out = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        saved = flat[i].item()
        flat[i] = saved + eps
        up = f(x).item()
        flat[i] = saved - eps
        down = f(x).item()
        flat[i] = saved
        out[i] = (up - down) / (2 * eps)
    return grad


def test_r1_and_path_length_penalties_equal_finite_differences_on_a_tiny_network():
    torch.manual_seed(0)
    disc = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Softplus(), torch.nn.Flatten(), torch.nn.Linear(3 * 16, 1)
    ).double()
    real = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    scores, r1 = r1_penalties(disc, real)
    for i in range(2):
        grad = _finite_difference_gradient(lambda x, i=i: disc(x)[i, 0], real.clone())
        assert math.isclose(r1[i].item(), grad.square().sum().item(), rel_tol=1e-6)
    assert r1.requires_grad  # trained through

    synthesis = torch.nn.Linear(3 * 5, 16).double()  # ws (2 x 3 x 5) -> images (2 x 1 x 4 x 4)
    ws = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(2, 1, 4, 4, dtype=torch.float64) / 4
    images = torch.tanh(synthesis(ws.flatten(1))).view(2, 1, 4, 4)
    lengths = path_lengths(images, ws, noise)
    for i in range(2):
        grad = _finite_difference_gradient(
            lambda w, i=i: (torch.tanh(synthesis(w.flatten(1))).view(2, 1, 4, 4)[i] * noise[i]).sum(),
            ws.detach().clone(),
        )[i]
        assert math.isclose(lengths[i].item(), grad.square().sum(1).mean().sqrt().item(), rel_tol=1e-6)


def test_a_tiny_run_trains_stops_resumes_bit_identical_and_is_measured_with_its_ema(tmp_path, prepared32):
    measure = {"weights": "untrained", "dims": 64, "n_generated": 16, "repeats": 1, "frd": False}
    reference = run_job(_spec(tmp_path / "reference", "sg", prepared32, eval=measure))
    entries = losses(reference)
    assert [e["epoch"] for e in entries] == [1, 2, 3]
    assert all(math.isfinite(e["d_loss"]) and math.isfinite(e["g_loss"]) for e in entries)
    assert all(e["ada_p"] >= 0 for e in entries) and entries[-1]["ada_rt"] is not None  # ADA by default
    generator, meta = load_generator(reference / "generator.pt")
    assert meta["model"] == "stylegan2" and not generator.training  # the EMA generates
    state = torch.load(list_checkpoints(reference / "checkpoints")[-1], weights_only=True)
    assert {"ada", "G", "D", "opt_G", "opt_D", "rng"} <= set(state) and "augment" in state["rng"]
    assert torch.equal(state["G"]["pl_mean"], generator.state_dict()["pl_mean"])
    fid = json.loads((reference / "fid.json").read_text())
    assert math.isfinite(fid["fid_mean"])

    spec = _spec(tmp_path, "sg", prepared32, eval=measure)
    run_dir = tmp_path / "artifacts" / "sg" / "v0001"
    with pytest.raises(JobInterrupted):  # the stop a SIGTERM sets, inside the second epoch
        run_job(spec, stop=_StopInEpoch(run_dir, epochs=1, batch=2))
    assert list_checkpoints(run_dir / "checkpoints")[-1].name == "epoch_0001_batch_0002.pt"
    assert run_job(spec, resume=True) == run_dir
    assert_same_run(run_dir, reference)
    assert json.loads((run_dir / "fid.json").read_text())["fid_mean"] == fid["fid_mean"]
    # the report knows the family: its row, its architecture knobs off paper256 in its configuration
    report = cli("report", tmp_path / "artifacts")
    assert report.returncode == 0, report.stderr
    [row] = json.loads((tmp_path / "artifacts" / "summary.json").read_text())["rows"]
    assert row["model"] == "stylegan2" and row["state"] == "done" and "channelbase = 256" in row["configuration"]
    assert (run_dir / "losses.png").is_file()  # with ADA's p and r_t on its second axis


def test_sigkill_of_a_stylegan2_run_after_a_checkpoint_then_resume_is_bit_identical(tmp_path, prepared32):
    reference = run_job(_spec(tmp_path / "reference", "killed", prepared32, epochs=4))
    spec = _spec(tmp_path, "killed", prepared32, epochs=4)
    run_dir = tmp_path / "artifacts" / "killed" / "v0001"
    process = subprocess.Popen([sys.executable, "-m", "heartjobs", "run", str(spec)], stderr=subprocess.DEVNULL)
    wait_for(lambda: len(losses(run_dir)) >= 2 if (run_dir / "losses.jsonl").exists() else False, proc=process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # killed outright
    assert run_job(spec, resume=True) == run_dir
    assert_same_run(run_dir, reference)


def test_ada_trains_the_other_families_and_is_refused_adaptive_for_a_critic(tmp_path, prepared32):
    small = {"epochs": 2, "batch_size": 4, "device": "cpu"}
    run_dir = run_job(write_spec(tmp_path, "dcgan_ada", "dcgan", prepared32, augment="ada", ada_kimg=0.01, **small))
    entries = losses(run_dir)
    assert all("ada_p" in e for e in entries) and entries[-1]["ada_rt"] is not None
    state = torch.load(list_checkpoints(run_dir / "checkpoints")[-1], weights_only=True)
    assert "ada" in state and "augment" in state["rng"]
    # a critic's scores have no fixed sign: adaptive p refused before training, a fixed p trains
    critic = write_spec(tmp_path, "wgan_ada", "wgan", prepared32, augment="ada", **small)
    result = cli("validate", critic)
    assert result.returncode == 2 and "wgan_ada.toml: train.augment: ADA's adaptive p" in result.stderr
    fixed = run_job(write_spec(tmp_path, "wgan_fixed", "wgan", prepared32, augment="ada", ada_p=0.5, **small))
    assert all(e["ada_p"] == 0.5 for e in losses(fixed))


@pytest.mark.parametrize(
    ("model", "train", "architecture", "message"),
    [
        ("dcgan", {}, {"channel_base": 256}, "architecture.channel_base: applies to stylegan2, not dcgan"),
        ("stylegan2", {}, {"width": 64}, "architecture.width: applies to dcgan, sngan, not stylegan2"),
        ("stylegan2", {"bf16": True}, {}, "train.bf16: not offered for stylegan2"),
        ("gan", {"r1_gamma": 1.0}, {}, "train.r1_gamma: applies to stylegan2, not gan"),
        ("gan", {"ada_target": 0.5}, {}, "train.ada_target: applies with augment = \"ada\", not 'none'"),
        # at 32 px, channel_base // 32 channels at the top: none below 32
        ("stylegan2", {}, {"channel_base": 16}, "architecture.channel_base: 16 leaves no channels at 32 px"),
    ],
)
def test_stylegan2_and_ada_keys_are_refused_where_they_do_not_apply(
    tmp_path, prepared32, model, train, architecture, message
):
    path = write_spec(tmp_path, "bad", model, prepared32, **train)
    path.write_text(path.read_text() + "[architecture]\n" + "".join(f"{k} = {v}\n" for k, v in architecture.items()))
    result = cli("validate", path)
    assert result.returncode == 2 and f"bad.toml: {message}" in result.stderr, result.stderr


def test_the_defaults_are_paper256_and_show_counts_the_trained_networks(tmp_path, prepared32):
    spec = load_spec(write_spec(tmp_path, "defaults", "stylegan2", prepared32))
    t = spec.train
    assert (t.batch_size, t.lr, t.betas, t.latent_dim, t.augment, t.r1_gamma, t.ema_kimg) == (
        64,
        0.0025,
        (0.0, 0.99),
        512,
        "ada",
        1.0,
        20.0,
    )
    assert spec.architecture.mapping_layers == 8 and spec.architecture.channel_base == 16384
    shown = cli("show", tmp_path / "defaults.toml")
    assert shown.returncode == 0, shown.stderr
    with torch.device("meta"):
        G, D = build_networks(spec.networks())
    assert f"{count_parameters(G)}" in shown.stdout.replace(",", "") and f"{count_parameters(D)}" in shown.stdout
