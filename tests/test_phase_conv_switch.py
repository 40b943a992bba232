"""[train] phase_conv: DCGAN trained with its upsampling convolutions rewritten (heartjobs.models.phase_conv)
keeps the plain generator's state_dict and parameter counts, resumes mid-epoch bit for bit, is another
spec hash (a run is not resumed under the other setting), and is refused for models without the pattern."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from heartjobs.errors import HeartjobsError
from heartjobs.models import build_networks, count_parameters
from heartjobs.models.dcgan import DCGANGenerator
from heartjobs.models.phase_conv import UpsampleConv, rewrite_generator
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.loading import load_spec
from heartjobs.store.checkpoint import list_checkpoints, load_checkpoint, load_generator, save_checkpoint
from heartjobs.store.prepared import PreparedSet
from heartjobs.training.loop import Interrupted, Trainer

from .conftest import cli, one_line_error, write_spec

QUICK = {"epochs": 2, "batch_size": 4, "device": "cpu"}


def test_phase_conv_is_a_later_default_off_and_in_the_hash_when_on(tmp_path, prepared32):
    folders = [tmp_path / name for name in ("plain", "spelled", "on")]
    for folder in folders:
        folder.mkdir()
    paths = [
        write_spec(folder, "j", "dcgan", prepared32, **QUICK, **switch)
        for folder, switch in zip(folders, ({}, {"phase_conv": False}, {"phase_conv": True}), strict=True)
    ]
    plain, spelled, on = (load_spec(p) for p in paths)
    assert plain.train.phase_conv is False and on.train.phase_conv is True
    assert "phase_conv" not in plain.hash_payload()["train"]  # every spec hash from before the key stands
    assert spelled.spec_hash == plain.spec_hash != on.spec_hash
    # the plain path stays allowed for a model without the pattern
    sngan = load_spec(write_spec(tmp_path, "sn", "sngan", prepared32, **QUICK, phase_conv=False))
    assert sngan.train.phase_conv is False
    # `heartjobs show`: the same parameter counts either way
    shown = [json.loads(cli("show", p).stdout) for p in (paths[0], paths[2])]
    assert shown[0]["parameters"] == shown[1]["parameters"] and shown[1]["train"]["phase_conv"] is True


@pytest.mark.parametrize("model", ["sngan", "gan"])
def test_phase_conv_is_refused_for_a_model_without_nearest_upsampling_convolutions(tmp_path, prepared32, model):
    spec = write_spec(tmp_path, "no", model, prepared32, **QUICK, phase_conv=True)
    one_line_error(cli("validate", spec), str(spec), "train.phase_conv: applies to dcgan", f"not {model}")


def test_a_phase_conv_run_saves_a_plain_dcgan_generator_and_is_not_resumed_without_it(tmp_path, prepared32):
    spec_path = write_spec(tmp_path, "phased", "dcgan", prepared32, **QUICK, phase_conv=True)
    spec = load_spec(spec_path)
    run = run_job(spec_path)
    resolved = json.loads((run / "resolved.json").read_text())
    assert resolved["spec"]["train"]["phase_conv"] is True and resolved["spec_hash"] == spec.spec_hash

    # the trainer's generator really is rewritten, with the plain generator's tensors and counts
    trainer = Trainer(spec, PreparedSet.open(prepared32).tensor(), torch.device("cpu"))
    assert sum(isinstance(m, UpsampleConv) for m in trainer.G.modules()) == 2
    with torch.device("meta"):
        plain_g, _ = build_networks(spec.networks())
    shapes = {k: tuple(v.shape) for k, v in plain_g.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in trainer.G.state_dict().items()} == shapes
    assert count_parameters(trainer.G) == count_parameters(plain_g)
    checkpoint = torch.load(list_checkpoints(run / "checkpoints")[-1], weights_only=True)
    assert {k: tuple(v.shape) for k, v in checkpoint["G"].items()} == shapes

    # generator.pt loads into a plain DCGAN generator, which computes what the rewritten one does
    plain, _ = load_generator(run / "generator.pt")
    assert isinstance(plain, DCGANGenerator) and not any(isinstance(m, UpsampleConv) for m in plain.modules())
    phased = copy.deepcopy(plain)
    assert rewrite_generator(phased) == 2
    z = torch.randn(16, spec.train.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = plain(z), phased(z)
    assert torch.allclose(a, b, rtol=0, atol=1e-5), (a - b).abs().max()

    # the other setting is another configuration: its resume is refused, naming the value that differs
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "interrupted", "pid": None}))
    off = write_spec(tmp_path, "phased", "dcgan", prepared32, **QUICK)
    # the rewrite draws no random numbers: the same seed starts from the plain run's weights
    plain_trainer = Trainer(load_spec(off), PreparedSet.open(prepared32).tensor(), torch.device("cpu"))
    a, b = plain_trainer.G.state_dict(), trainer.G.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = plain_trainer.D.state_dict(), trainer.D.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(HeartjobsError, match="refusing to resume") as refused:
        run_job(off, resume=True)
    assert "train.phase_conv: True -> (none)" in str(refused.value)
    with pytest.raises(HeartjobsError, match="spec_hash: the checkpoint was made with spec"):
        load_checkpoint(list_checkpoints(run / "checkpoints")[-1], load_spec(off).spec_hash)


def test_a_phase_conv_trainer_stopped_mid_epoch_continues_bit_identical(tmp_path, prepared32):
    train = {"epochs": 2, "batch_size": 2, "device": "cpu", "phase_conv": True}
    spec = load_spec(write_spec(tmp_path, "mid", "dcgan", prepared32, **train))
    images, cpu = PreparedSet.open(prepared32).tensor(), torch.device("cpu")
    reference = Trainer(spec, images, cpu)
    while reference.epoch < 2:
        reference.train_epoch()

    stopped = Trainer(spec, images, cpu)
    asked = []
    with pytest.raises(Interrupted):
        stopped.train_epoch(lambda: asked.append(1) or len(asked) > 3)  # stop before the fourth batch
    path = save_checkpoint(tmp_path / "checkpoints", stopped.state_dict(), spec.spec_hash, keep=1)
    del stopped

    resumed = Trainer(spec, images, cpu)
    resumed.load_state_dict(load_checkpoint(path, spec.spec_hash))
    while resumed.epoch < 2:
        resumed.train_epoch()
    for network in ("G", "D"):
        a, b = getattr(resumed, network).state_dict(), getattr(reference, network).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), network
    strip = [[(e["epoch"], e["d_loss"], e["g_loss"]) for e in t.history] for t in (resumed, reference)]
    assert strip[0] == strip[1] and len(strip[0]) == 2
