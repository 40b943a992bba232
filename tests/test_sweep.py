"""Sweep files: the committed thesis matrix regenerates byte for byte, grid mode writes the cartesian
product as valid job specs, and a bad sweep file is one error line naming the file and the key."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from heartjobs.errors import HeartjobsError
from heartjobs.spec import load_spec, parse_spec
from heartjobs.sweep import write_jobs

from .conftest import run_cli

GRID = {"lr": [0.0001, 0.0004], "latent_dim": [50, 100, 200]}
GRID_VARY = "".join(f"{key} = {values}\n" for key, values in GRID.items())


def _sweep_file(tmp_path: Path, prepared: Path, vary: str) -> Path:
    path = tmp_path / "study.sweep.toml"
    path.write_text(
        'mode = "grid"\n'
        f'[base.data]\nprepared = "{prepared}"\n'
        f'[base.output]\nroot = "{tmp_path / "artifacts"}"\n'
        '[base.train]\nepochs = 3\ndevice = "cpu"\n'
        f'[[group]]\nmodel = "dcgan"\n[group.vary]\n{vary}'
    )
    return path


def test_sweep_generation_matches_the_committed_jobs(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)  # the job files name the sweep file by its path from the repository root
    expected = sorted(p.name for p in (root / "jobs").glob("*.toml") if not p.name.endswith(".sweep.toml"))
    written = write_jobs(Path("jobs/thesis.sweep.toml"), tmp_path)
    assert sorted(p.name for p in written) == expected and len(expected) == 21
    for path in written:
        assert path.read_bytes() == (root / "jobs" / path.name).read_bytes(), path.name
    dry = run_cli("sweep", "jobs/thesis.sweep.toml", "--out", tmp_path / "dry", "--dry-run", cwd=root)
    assert dry.returncode == 0 and "21 jobs" in dry.stdout and not (tmp_path / "dry").exists()


def test_grid_mode_writes_one_valid_job_per_combination_of_the_varied_values(tmp_path, prepared32):
    sweep = _sweep_file(tmp_path, prepared32, GRID_VARY)
    out = tmp_path / "jobs"
    written = write_jobs(sweep, out)

    assert len(written) == 6 and sorted(out.glob("*.toml")) == sorted(written)
    names = [p.stem for p in written]
    assert len(set(names)) == 6
    assert "dcgan_lr0.0001_ldim50" in names and "dcgan_lr0.0004_ldim200" in names
    combinations = set()
    for path in written:
        spec = parse_spec(path)
        assert spec.name == path.stem and spec.model == "dcgan"
        assert (spec.train.epochs, spec.train.device) == (3, "cpu")  # the base's [train] is kept
        resolved = load_spec(path)
        assert resolved.data.size == 32 and resolved.output.root == tmp_path / "artifacts"
        combinations.add((resolved.train.lr, resolved.train.latent_dim))
    assert combinations == set(itertools.product(GRID["lr"], GRID["latent_dim"]))


def test_a_vary_key_that_is_not_a_train_key_is_one_error_line_naming_the_file_and_key(tmp_path, prepared32):
    sweep = _sweep_file(tmp_path, prepared32, "lr = [0.0001, 0.0004]\nlearning_rate = [0.1, 0.2]\n")
    with pytest.raises(HeartjobsError) as caught:
        write_jobs(sweep, tmp_path / "jobs")
    message = str(caught.value)
    assert message == f"{sweep}: group[0].vary.learning_rate: not a [train] key"
    assert not (tmp_path / "jobs").exists()

    result = run_cli("sweep", sweep, "--out", tmp_path / "jobs")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "jobs").exists()


def test_the_committed_jobs_resolve_to_the_thesis_protocol(tmp_path, prepared32):
    from heartjobs.report import THESIS_PROTOCOL, measured_protocol, protocol_differences

    root = Path(__file__).resolve().parent.parent
    jobs = [p for p in sorted((root / "jobs").glob("*.toml")) if not p.name.endswith(".sweep.toml")]
    assert len(jobs) == 21
    for path in jobs:
        # resolved against a prepared set that exists here (the HiP-CT set is a GPU box's)
        job = tmp_path / path.name
        job.write_text(path.read_text().replace('"data/prepared/hipct"', f'"{prepared32}"'))
        spec = load_spec(job).model_dump(mode="json")
        spec["data"]["count"] = 3307  # the HiP-CT heart, every second slice: the thesis' set
        e = spec["eval"]
        # what a measurement under these settings records (heartjobs.evaluation.inception.measure)
        measured = {
            "standard_weights": e["weights"] == "standard",
            "n_generated": e["n_generated"],
            "repeats": [{}] * e["repeats"],
            "dims": e["dims"],
            "normalize": e["normalize"],
            "n_real": spec["data"]["count"] if e["n_real"] is None else e["n_real"],
        }
        assert protocol_differences(measured_protocol(spec, measured)) == [], path.name
        assert measured_protocol(spec, measured) == THESIS_PROTOCOL
        assert e["fid"] and e["frd"], path.name  # measured at the end of training, FRD beside FID
