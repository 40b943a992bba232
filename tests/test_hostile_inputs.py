"""Hostile files heartjobs reads (issue 28, items 10, 11 and 18): generator files and checkpoints that
torch.load(weights_only=True) accepts but that are not heartjobs', prepared-set manifests that disagree
with their images, weights files that are not Inception's, manifests that cannot be read, and control
characters in what an error line echoes. Each goes through the real command (`cli`, in this process):
exit 2, one line naming the file and the field, no traceback, nothing written where it should not be."""

from __future__ import annotations

import fractions
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from heartjobs.runner.lifecycle import run_job

from .conftest import cli, needs_root, one_line_error, write_spec

MEASURE = ("--weights", "untrained", "--dims", "64", "--n", "10", "--repeats", "1", "--no-frd")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prepared32) -> Path:
    """A finished two-epoch GAN run (read-only: tests copy it)."""
    folder = tmp_path_factory.mktemp("finished")
    return run_job(write_spec(folder, "done", "gan", prepared32, epochs=2, checkpoint_every=1, device="cpu"))


def _copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    return copy


# --- item 10: generator files and checkpoints that are not heartjobs' ---


def _generator_files(good: dict) -> dict:
    return {
        "a plain tensor": (torch.zeros(3), "not a heartjobs generator file (it holds a Tensor, not a dict)"),
        "a list": ([1, 2], "not a heartjobs generator file (it holds a list, not a dict)"),
        "state_dict as a list": ({**good, "state_dict": [1]}, "state_dict: expected the generator's tensors"),
        "no epoch": ({k: v for k, v in good.items() if k != "epoch"}, "epoch: missing"),
        "size as a string": ({**good, "size": "32"}, "size: expected a positive whole number, got '32'"),
        "an unknown model": ({**good, "model": "vae"}, "model: expected one of gan, wgan, dcgan"),
        "another size": ({**good, "size": 64}, "size: 64 here, 32 in the run's spec"),
    }


@pytest.mark.parametrize(
    "case", ["a plain tensor", "a list", "state_dict as a list", "no epoch", "size as a string", "an unknown model",
             "another size"]
)  # fmt: skip
def test_a_generator_file_that_is_not_ours_is_one_line_naming_the_field(tmp_path, finished, case):
    run = _copy_of(finished, tmp_path)
    payload, expected = _generator_files(torch.load(finished / "generator.pt", weights_only=True))[case]
    torch.save(payload, run / "generator.pt")
    before = sorted(p.name for p in run.iterdir())
    for command in ("evaluate", "fid"):
        one_line_error(cli(command, run, *MEASURE), f"{run / 'generator.pt'}: {expected}")
    assert sorted(p.name for p in run.iterdir()) == before  # no fid.json, no evals/


def test_a_checkpoint_that_is_not_ours_is_one_line_naming_the_field(tmp_path, finished):
    good = torch.load(finished / "checkpoints" / "epoch_0002.pt", weights_only=True)
    cases = {
        "tensor": (torch.zeros(3), "not a heartjobs checkpoint (it holds a Tensor, not a dict)"),
        "list": ([1], "not a heartjobs checkpoint (it holds a list, not a dict)"),
        "no_epoch": ({k: v for k, v in good.items() if k != "epoch"}, "epoch: missing"),
        "epoch_text": ({**good, "epoch": "2"}, "epoch: expected a whole number of epochs, got '2'"),
        "g_list": ({**good, "G": [1]}, "G: expected the generator's tensors by name, got a list"),
        "position": ({**good, "position": {"batch": 1}}, "position.perm: missing"),
        "generator": (torch.load(finished / "generator.pt", weights_only=True), "not a training checkpoint"),
    }
    for name, (payload, expected) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        one_line_error(cli("evaluate", finished, "--checkpoint", path, *MEASURE), f"{path}: {expected}")
    assert not (finished / "fid.json").exists()


def test_a_refused_pickle_is_named_without_torchs_advice_to_load_it_unsafely(tmp_path, finished):
    path = tmp_path / "foreign.pt"
    torch.save({"G": fractions.Fraction(1, 2)}, path)  # a class weights_only does not allow
    error = one_line_error(cli("evaluate", finished, "--checkpoint", path, *MEASURE), f"{path}: unreadable checkpoint")
    assert "Unsupported global: GLOBAL fractions.Fraction" in error
    assert "weights_only" not in error and "trust" not in error and "safe_globals" not in error
    assert "\x1b" not in error  # torch's message holds terminal escapes


def test_resume_refuses_a_foreign_newest_checkpoint_before_writing_anything(tmp_path, prepared32):
    spec = write_spec(tmp_path, "resume", "gan", prepared32, epochs=2, checkpoint_every=1, device="cpu")
    run = run_job(spec)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    good = torch.load(run / "checkpoints" / "epoch_0002.pt", weights_only=True)
    planted = run / "checkpoints" / "epoch_0003.pt"  # the newest by name: the one a resume continues from
    cases = {
        "list": ([1], "not a heartjobs checkpoint"),
        "no_epoch": ({k: v for k, v in good.items() if k != "epoch"}, "epoch: missing"),
        "history": ({**good, "history": None}, "history: expected a list of epoch records"),
        "other_networks": ({**good, "G": {"weight": torch.zeros(2)}}, "G: not the generator this spec builds"),
    }
    for payload, expected in cases.values():
        torch.save(payload, planted)
        before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
        status_before = (run / "status.json").read_bytes()
        one_line_error(
            cli("run", spec, "--resume"), f"{planted}: {expected}", "move it away to resume from epoch_0002.pt"
        )
        assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # no version, no env.resume1.json
        assert (run / "status.json").read_bytes() == status_before


# --- item 11: a manifest that disagrees with its images ---


def _tampered(tmp_path: Path, prepared: Path, edit: dict, images: np.ndarray | None = None) -> Path:
    folder = tmp_path / "tampered"
    shutil.copytree(prepared, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **edit}))
    if images is not None:
        np.save(folder / "images.npy", images)
    return folder


@pytest.mark.parametrize(
    "edit, images, expected",
    [
        ({"shape": [12, 3, 32, 32]}, None, "shape: 3 channels; a prepared set has one"),
        ({"count": 1000}, None, "count: 1000, but shape says 12 images"),
        ({"shape": [12, 1, 16, 64]}, np.zeros((12, 16, 64), np.uint8), "shape: 16 x 64 images"),
        ({"shape": [1000, 1, 32, 32], "count": 1000}, None, "images.npy: shape (12, 32, 32) uint8 does not match"),
        ({"shape": [12, 1, 64, 64]}, np.zeros((12, 64, 64), np.uint8), "shape: 64 px images, but parameters.size"),
        ({"dtype": "float32"}, None, "dtype: expected 'uint8'"),
    ],
    ids=["three channels", "count over the images", "16x64", "more images than the array", "size", "dtype"],
)
def test_a_tampered_manifest_is_refused_before_training(tmp_path, prepared32, edit, images, expected):
    folder = _tampered(tmp_path, prepared32, edit, images)
    spec = write_spec(tmp_path, "tampered", "gan", folder, epochs=1, device="cpu")
    one_line_error(cli("run", spec), f"{spec}: data.prepared: {folder}", expected)
    assert not (tmp_path / "artifacts").exists()  # no version claimed
    one_line_error(cli("data", "info", folder), expected)


def test_data_info_names_a_field_it_shows_that_a_tampered_manifest_lacks(tmp_path, prepared32):
    manifest = json.loads((prepared32 / "manifest.json").read_text())
    folder = _tampered(tmp_path, prepared32, {})
    (folder / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "window"}))
    one_line_error(cli("data", "info", folder), f"{folder / 'manifest.json'}: window: missing")
    (folder / "manifest.json").write_text(json.dumps({**manifest, "sources": 5}))
    one_line_error(cli("data", "info", folder), f"{folder / 'manifest.json'}: not what heartjobs writes")


# --- item 18: weights checked before training, a manifest's real reason, control characters escaped ---


def test_weights_that_are_not_an_inception_state_dict_fail_before_training(tmp_path, prepared32):
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2)}, other)
    for weights, expected in (
        ("/etc/passwd", "FID weights: /etc/passwd: unreadable Inception weights file"),
        (str(other), f"FID weights: {other}: not an FID Inception state dict"),
    ):
        spec = write_spec(tmp_path, "weights", "gan", prepared32, eval={"weights": weights}, epochs=1, device="cpu")
        one_line_error(cli("run", spec), f"{spec}: eval.weights: {expected}")
        assert not (tmp_path / "artifacts").exists()  # refused before a version was claimed
        one_line_error(cli("validate", spec), f"{spec}: eval.weights: {expected}")


def test_a_manifest_that_cannot_be_read_says_why(tmp_path, prepared32):
    folder = tmp_path / "set"
    shutil.copytree(prepared32, folder)
    manifest = folder / "manifest.json"
    manifest.unlink()
    manifest.mkdir()
    one_line_error(cli("data", "info", folder), f"{manifest}: cannot read (Is a directory)")
    manifest.rmdir()
    manifest.symlink_to(manifest)
    one_line_error(cli("data", "info", folder), f"{manifest}: cannot read (Too many levels of symbolic links)")
    manifest.unlink()
    manifest.write_text("{")
    one_line_error(cli("data", "info", folder), f"{manifest}: not valid JSON (Expecting")
    manifest.unlink()
    one_line_error(cli("data", "info", folder), f"{manifest}: missing")


@needs_root
def test_a_manifest_another_user_cannot_read_says_permission_denied(prepared32):
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # a folder uid 4242 can reach (pytest's tmp_path is 0700)
    try:
        shared.chmod(0o755)
        shutil.copytree(prepared32, shared / "set")
        (shared / "set").chmod(0o755)
        (shared / "set" / "manifest.json").chmod(0)
        os.seteuid(4242)  # root reads any file: this process acts as a user who may not, for one call
        try:
            result = cli("data", "info", shared / "set")
        finally:
            os.seteuid(0)
        one_line_error(result, f"{shared / 'set' / 'manifest.json'}: cannot read (Permission denied)")
    finally:
        shutil.rmtree(shared)


def _raw_controls(text: str) -> list[str]:
    return [ch for ch in text if (ord(ch) < 32 and ch != "\n") or 0x7F <= ord(ch) < 0xA0]


def test_control_characters_in_an_error_line_are_escaped(tmp_path, prepared32):
    # a value from a spec, through TOML's escapes: NUL and a clear-the-screen sequence
    spec = write_spec(tmp_path, "controls", "gan", prepared32, epochs=1, device="cpu")
    spec.write_text(spec.read_text().replace(f'prepared = "{prepared32}"', r'prepared = "/no\u0000where\u001b[2J"'))
    result = cli("validate", spec)
    error = one_line_error(result, r"/no\x00where\x1b[2J")
    assert not _raw_controls(result.stderr), error
    # a file name from the command line, with a colour escape and a bidi override
    hostile = tmp_path / "\x1b[31mred\u202e.toml"
    result = cli("validate", hostile)
    one_line_error(result, r"\x1b[31mred\u202e.toml: no such file")
    assert not _raw_controls(result.stderr) and "\u202e" not in result.stderr
