"""Checkpoints written off the critical path (heartjobs.store.background): the same bytes as a write in the
foreground, a deep snapshot of the state, one write at a time, and a failed write raised in the training
thread, on a real Trainer and real files. Signals during a background write: tests/test_resume.py (SIGKILL,
then a bit-identical resume) and tests/test_faults.py (a stop waits for the write in flight). The pinned
CUDA copy: bench/gpu_check.py (`make gpu-check`), on a GPU box."""

from __future__ import annotations

import io
import threading

import pytest
import torch

from heartjobs.spec.loading import load_spec
from heartjobs.store.background import BackgroundWriter, host_copy
from heartjobs.store.checkpoint import load_checkpoint, save_checkpoint, save_checkpoint_in_background
from heartjobs.store.prepared import PreparedSet
from heartjobs.training.loop import Interrupted, Trainer

from .conftest import write_spec

CPU = torch.device("cpu")


def _stopped_mid_epoch(tmp_path, prepared32) -> tuple[Trainer, str]:
    spec = load_spec(write_spec(tmp_path, "bg", "dcgan", prepared32, epochs=3, batch_size=2, device="cpu"))
    trainer = Trainer(spec, PreparedSet.open(prepared32).tensor(), CPU)
    trainer.train_epoch()
    asked = []
    with pytest.raises(Interrupted):
        trainer.train_epoch(lambda: asked.append(1) or len(asked) > 3)
    return trainer, spec.spec_hash


def test_a_checkpoint_written_in_the_background_has_the_bytes_of_one_written_in_the_foreground(tmp_path, prepared32):
    trainer, spec_hash = _stopped_mid_epoch(tmp_path, prepared32)
    foreground = save_checkpoint(tmp_path / "fg", trainer.state_dict(), spec_hash, keep=2)
    with BackgroundWriter() as writer:
        background = save_checkpoint_in_background(
            writer, tmp_path / "bg", trainer.state_dict(), spec_hash, keep=2, device=CPU
        )
        trainer.train_epoch()  # training goes on changing the originals meanwhile
    assert background.name == foreground.name == "epoch_0001_batch_0003.pt"
    assert background.read_bytes() == foreground.read_bytes()
    assert load_checkpoint(background, spec_hash)["position"]["batch"] == 3


def test_the_host_copy_is_not_changed_by_training_that_goes_on(tmp_path, prepared32):
    # the write starts only after training changed every original (weights, Adam's moments and step
    # counters, the random generators): what it writes is still the state as it was when copied
    trainer, spec_hash = _stopped_mid_epoch(tmp_path, prepared32)
    foreground = save_checkpoint(tmp_path / "fg", trainer.state_dict(), spec_hash, keep=1)
    copied = host_copy(trainer.state_dict(), CPU)
    trainer.train_epoch()
    assert trainer.epoch == 2
    with BackgroundWriter() as writer:
        writer.submit(lambda: save_checkpoint(tmp_path / "bg", copied, spec_hash, keep=1))
    assert (tmp_path / "bg" / foreground.name).read_bytes() == foreground.read_bytes()


def test_the_next_write_waits_for_the_one_in_flight():
    entered, release, first_done = threading.Event(), threading.Event(), threading.Event()
    order = []

    def first():
        entered.set()
        release.wait()
        order.append("first")
        first_done.set()

    writer = BackgroundWriter()
    writer.submit(first)
    releaser = threading.Thread(target=lambda: (entered.wait(), release.set()))
    releaser.start()
    writer.submit(lambda: order.append(("second", first_done.is_set())))
    assert first_done.is_set()  # submit returned only once the first write was done
    writer.wait()
    releaser.join()
    assert order == ["first", ("second", True)]
    assert not writer.busy


def test_a_failed_background_write_is_raised_at_the_next_submit_and_not_again(tmp_path, prepared32):
    trainer, spec_hash = _stopped_mid_epoch(tmp_path, prepared32)
    not_a_folder = tmp_path / "checkpoints"
    not_a_folder.write_text("a file where the checkpoint folder should be")
    writer = BackgroundWriter()
    save_checkpoint_in_background(writer, not_a_folder, trainer.state_dict(), spec_hash, keep=1, device=CPU)
    written = []
    with pytest.raises(OSError):
        writer.submit(lambda: written.append(1))
    assert written == []  # the next write did not start
    writer.submit(lambda: written.append(1))  # raised once: the writer goes on
    writer.wait()
    assert written == [1]


def test_a_failed_write_is_raised_at_wait_and_at_the_end_of_the_block():
    def fail():
        raise OSError("disk gone")

    writer = BackgroundWriter()
    writer.submit(fail)
    with pytest.raises(OSError, match="disk gone"):
        writer.wait()
    writer.wait()  # raised once
    with pytest.raises(OSError, match="disk gone"), BackgroundWriter() as writer:
        writer.submit(fail)


def test_when_the_block_fails_too_its_error_is_kept_and_the_write_error_noted():
    def fail():
        raise OSError("disk gone")

    with pytest.raises(RuntimeError, match="training broke") as raised, BackgroundWriter() as writer:
        writer.submit(fail)
        raise RuntimeError("training broke")
    assert any("disk gone" in note for note in raised.value.__notes__)


def _saved(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else []
    return [tensor for item in items for tensor in _tensors(item)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])  # "cuda": pinning asked for, and nothing on CUDA to pin
def test_the_host_copy_is_a_deep_snapshot_of_nested_state_optimizer_state_included(device):
    # What a trainer's state holds: a state_dict (its metadata too), an optimizer's state (tensors under int
    # keys, param groups in a list, Adam's step counters), one tensor under two names, plain values.
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    adam = torch.optim.Adam(model.parameters(), lr=0.1)

    def step() -> None:
        model(torch.randn(8, 3)).square().sum().backward()
        adam.step()

    step()
    shared = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    state = {"G": model.state_dict(), "opt": adam.state_dict(), "a": shared, "b": [shared, (1, "x")], "epoch": 1}
    before = _saved(state)
    copied = host_copy(state, device)
    assert copied["opt"]["state"][0]["exp_avg"] is not state["opt"]["state"][0]["exp_avg"]
    assert copied["G"]._metadata == state["G"]._metadata and copied["b"][1] == (1, "x")
    assert copied["a"] is copied["b"][0] and copied["a"].stride() == shared.stride()  # shared as before
    originals = {tensor.untyped_storage().data_ptr() for tensor in _tensors(state)}
    for tensor in _tensors(copied):  # fresh host memory, nothing pinned without a GPU to pin for
        assert tensor.device.type == "cpu" and not tensor.is_pinned()
        assert tensor.untyped_storage().data_ptr() not in originals
    assert _saved(copied) == before  # what torch.save writes from it: the originals' bytes
    # training goes on in place: weights, BatchNorm's running statistics, Adam's moments and step counters
    step()
    shared.add_(1)
    assert _saved(state) != before
    assert _saved(copied) == before  # the snapshot did not move
