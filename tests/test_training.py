"""`heartjobs run`: full tiny runs of all three models at 32 px, artifacts, determinism, versions."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch._dynamo.utils import counters

from heartjobs.imaging import to_uint8
from heartjobs.models import build_models
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.loading import load_spec
from heartjobs.store.checkpoint import list_checkpoints, load_checkpoint, load_generator, save_checkpoint
from heartjobs.store.prepared import PreparedSet
from heartjobs.training.loop import Interrupted, Trainer, seed_everything

from .conftest import cli, run_cli, write_spec

TINY = {"epochs": 3, "batch_size": 4, "sample_every": 2, "checkpoint_every": 1, "keep_checkpoints": 2, "device": "cpu"}


def _weights(run_dir):
    generator, _ = load_generator(run_dir / "generator.pt")
    return generator.state_dict()


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("model", ["gan", "wgan", "dcgan"])
def test_tiny_run_writes_a_complete_well_formed_version(tmp_path, prepared32, model):
    spec = write_spec(tmp_path, f"{model}_tiny", model, prepared32, **TINY)
    run_dir = run_job(spec)
    assert run_dir == tmp_path / "artifacts" / f"{model}_tiny" / "v0001"
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    assert (run_dir / "job.toml").read_bytes() == spec.read_bytes()

    resolved = json.loads((run_dir / "resolved.json").read_text())
    assert resolved["spec"]["model"] == model and len(resolved["spec_hash"]) == 16
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["command"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["epochs_done"] == 3 and status["error"] is None
    assert status["ended"] >= status["started"]

    losses = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in losses] == [1, 2, 3]
    for entry in losses:
        assert math.isfinite(entry["d_loss"]) and math.isfinite(entry["g_loss"])
        assert entry["seconds"] > 0 and entry["images_per_s"] > 0

    # 4x4 grids of 32 px tiles with 2 px padding; the real grid shows all 12 images of this small set
    for png in ("samples/epoch_0002.png", "samples/epoch_0003.png"):
        with Image.open(run_dir / png) as img:
            assert img.size == (4 * 34 + 2, 4 * 34 + 2), png
    with Image.open(run_dir / "real.png") as img:
        assert img.size == (4 * 34 + 2, 3 * 34 + 2)
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch_0002.png", "epoch_0003.png"]
    assert (run_dir / "losses.png").stat().st_size > 1000

    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["epoch_0002.pt", "epoch_0003.pt"]
    state = torch.load(run_dir / "checkpoints" / "epoch_0003.pt", weights_only=True)
    assert state["spec_hash"] == resolved["spec_hash"] and state["epoch"] == 3
    assert {"G", "D", "opt_G", "opt_D", "rng", "fixed_noise", "history"} <= state.keys()

    generator, meta = load_generator(run_dir / "generator.pt")
    assert meta["model"] == model and meta["epoch"] == 3 and not generator.training
    _assert_same_weights(generator.state_dict(), state["G"])
    # the saved generator reproduces the final sample grid from the stored fixed noise
    with torch.no_grad():
        images = to_uint8(generator(state["fixed_noise"]))
    grid = np.asarray(Image.open(run_dir / "samples" / "epoch_0003.png"))
    np.testing.assert_array_equal(grid[2:34, 2:34], images[0, 0].numpy())


def test_same_spec_gives_bit_identical_weights_and_another_seed_does_not(tmp_path, prepared32):
    first = run_job(write_spec(tmp_path, "det", "dcgan", prepared32, **TINY))
    second = run_job(write_spec(tmp_path, "det", "dcgan", prepared32, **TINY))
    assert (first.name, second.name) == ("v0001", "v0002")  # a new version, the first untouched
    _assert_same_weights(_weights(first), _weights(second))
    other = run_job(write_spec(tmp_path, "det_seed", "dcgan", prepared32, **TINY, seed=1))
    assert any(not torch.equal(a, b) for a, b in zip(_weights(first).values(), _weights(other).values(), strict=True))


def test_training_moves_the_generator_toward_the_data(tmp_path, prepared32):
    # 60 epochs of the GAN on 12 images: the mean generated image approaches the mean real image.
    spec = write_spec(tmp_path, "learn", "gan", prepared32, epochs=60, batch_size=4, sample_every=60, device="cpu")
    run_dir = run_job(spec)
    trained, _ = load_generator(run_dir / "generator.pt")
    seed_everything(0)  # the trainer's initial generator, rebuilt
    initial, _ = build_models("gan", 32, 1, 100)
    initial.eval()
    real_mean = torch.from_numpy(np.load(prepared32 / "images.npy")).float().mean(0)
    z = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, after = (F.l1_loss(g(z).add(1).mul(127.5).mean(0)[0], real_mean).item() for g in (initial, trained))
    assert after < 0.5 * before, (before, after)


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, prepared32):
    spec = write_spec(tmp_path, "cuda_job", "gan", prepared32, epochs=1, device="cuda")
    # a real process: CUDA reads CUDA_VISIBLE_DEVICES once, when it starts, which in this process (on a GPU
    # box) may have happened already
    result = run_cli("run", spec, env={"CUDA_VISIBLE_DEVICES": ""})  # no GPU visible, as on CI
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: train.device: cuda requested, but CUDA is not available on this machine"
    ]
    assert not (tmp_path / "artifacts").exists()
    # --device says where to train this time, and names itself when it can't be had
    result = run_cli("run", spec, "--device", "cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --device: cuda requested, but CUDA is not available on this machine"
    ]


def test_run_device_trains_there_without_changing_the_jobs_identity(tmp_path, prepared32):
    spec = write_spec(tmp_path, "elsewhere", "gan", prepared32, epochs=1, device="cuda")
    result = cli("run", spec, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "artifacts" / "elsewhere" / "v0001"
    assert json.loads((run / "env.json").read_text())["device"] == "cpu"
    recorded = json.loads((run / "resolved.json").read_text())
    assert recorded["spec_hash"] == load_spec(spec).spec_hash and recorded["spec"]["train"]["device"] == "cuda"


@pytest.mark.parametrize("switch", ["compile", "bf16"])
def test_speed_switches_train_the_same_model(tmp_path, prepared32, monkeypatch, switch):
    # torch.compile must compute what eager mode computes; bf16 autocast only approximately so. The
    # compiled graphs go through aot_eager: the graphs inductor would get (Dynamo's capture, AOTAutograd's
    # forward and backward), without generating and compiling C++ on this CPU (about 25 s a run).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    base = {"epochs": 1, "batch_size": 4, "device": "cpu", "sample_every": 1}
    plain = run_job(write_spec(tmp_path, "plain", "gan", prepared32, **base))
    counters.clear()
    switched = run_job(write_spec(tmp_path, f"with_{switch}", "gan", prepared32, **base, **{switch: True}))
    resolved = json.loads((switched / "resolved.json").read_text())
    assert resolved["spec"]["train"][switch] is True
    a, b = _weights(plain), _weights(switched)
    tolerance = 1e-5 if switch == "compile" else 5e-3
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tolerance), key
    if switch == "compile":  # the steps really ran through compiled graphs (TorchDynamo built some)
        assert counters["stats"]["unique_graphs"] > 0
    else:  # bf16 autocast really changed the arithmetic
        assert any(not torch.equal(a[k], b[k]) for k in a)


def test_a_trainer_stopped_mid_epoch_continues_bit_identical_from_its_saved_state(tmp_path, prepared32):
    # The stop hook ends the epoch between two batches; the state saved then (a checkpoint named by the
    # batch) continues in a fresh Trainer exactly where the uninterrupted one went: no batch repeated.
    spec = load_spec(write_spec(tmp_path, "mid", "dcgan", prepared32, epochs=3, batch_size=2, device="cpu"))
    images, cpu = PreparedSet.open(prepared32).tensor(), torch.device("cpu")
    reference = Trainer(spec, images, cpu)
    while reference.epoch < 3:
        reference.train_epoch()

    stopped = Trainer(spec, images, cpu)
    stopped.train_epoch()
    asked = []
    with pytest.raises(Interrupted):
        stopped.train_epoch(lambda: asked.append(1) or len(asked) > 4)  # stop before the fifth batch
    path = save_checkpoint(tmp_path / "checkpoints", stopped.state_dict(), spec.spec_hash, keep=1)
    assert path.name == "epoch_0001_batch_0004.pt"
    del stopped

    resumed = Trainer(spec, images, cpu)
    resumed.load_state_dict(load_checkpoint(path, spec.spec_hash))
    while resumed.epoch < 3:
        resumed.train_epoch()
    _assert_same_weights(resumed.G.state_dict(), reference.G.state_dict())
    _assert_same_weights(resumed.D.state_dict(), reference.D.state_dict())
    strip = [[(e["epoch"], e["d_loss"], e["g_loss"]) for e in t.history] for t in (resumed, reference)]
    assert strip[0] == strip[1] and len(strip[0]) == 3


def test_run_writes_a_result_record_of_how_it_ended(tmp_path, prepared32):
    # What a queue worker reads instead of the job's log: done with its run folder, or failed with the error.
    spec = write_spec(tmp_path, "recorded", "gan", prepared32, epochs=1, batch_size=4, device="cpu")
    done = cli("run", spec, "--result", tmp_path / "done.json")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "done.json").read_text())
    assert record == {
        "format": 2,
        "spec": str(spec),
        "run_dir": str(tmp_path / "artifacts" / "recorded" / "v0001"),
        "state": "done",
        "error": None,
        "exit_code": 0,
    }
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nmodel = "gan"\n[data]\nprepared = "/nowhere"\n')
    failed = cli("run", bad, "--result", tmp_path / "failed.json")
    record = json.loads((tmp_path / "failed.json").read_text())
    assert failed.returncode == 2 == record["exit_code"]
    assert record["state"] == "failed" and record["run_dir"] is None
    assert record["error"].startswith(f"{bad}: data.prepared:") and record["error"] in failed.stderr
    folder = cli("run", spec, "--result", tmp_path)  # refused before any training
    assert (
        folder.returncode == 2 and folder.stderr.strip() == f"error: --result {tmp_path}: is a folder; give a file path"
    )
    assert not (tmp_path / "artifacts" / "recorded" / "v0002").exists()
