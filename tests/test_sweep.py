"""Sweep files: the committed thesis matrix regenerates byte for byte, grid mode writes the cartesian
product as valid job specs, and a bad sweep file is one error line naming the file and the key."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from heartjobs.errors import HeartjobsError
from heartjobs.spec.loading import load_spec, parse_spec
from heartjobs.spec.sweep import write_jobs

from .conftest import cli

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
    dry = cli("sweep", "jobs/thesis.sweep.toml", "--out", tmp_path / "dry", "--dry-run", cwd=root)
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

    result = cli("sweep", sweep, "--out", tmp_path / "jobs")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "jobs").exists()


def test_the_committed_jobs_resolve_to_the_thesis_protocol(tmp_path, prepared32):
    from heartjobs.records import Measurement
    from heartjobs.report.thesis import THESIS_PROTOCOL, measured_protocol, protocol_differences

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
        # what a measurement under these settings records (heartjobs.evaluation.driver.measure)
        measured = Measurement(
            fid_mean=0.0,
            fid_std=0.0,
            standard_weights=e["weights"] == "standard",
            n_generated=e["n_generated"],
            repeats=[{}] * e["repeats"],
            dims=e["dims"],
            normalize=e["normalize"],
            n_real=spec["data"]["count"] if e["n_real"] is None else e["n_real"],
        )
        assert protocol_differences(measured_protocol(spec, measured)) == [], path.name
        assert measured_protocol(spec, measured) == THESIS_PROTOCOL
        assert e["measure"] and e["frd"], path.name  # measured at the end of training, FRD beside FID


def _header_free(path: Path) -> str:
    """A generated job file without its first line (which names the sweep file it came from)."""
    return path.read_text().split("\n", 1)[1]


def test_seeds_repeat_every_configuration_and_seed_0_keeps_the_single_seed_job(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    written = write_jobs(Path("jobs/thesis-seeds.sweep.toml"), tmp_path)
    names = [p.stem for p in written]
    assert len(names) == 63 == len(set(names))
    thesis = sorted(p for p in (root / "jobs").glob("*.toml") if not p.name.endswith(".sweep.toml"))
    for job in thesis:  # seed 0: the thesis job's own name and spec, so a finished thesis run counts
        assert _header_free(tmp_path / job.name) == _header_free(job), job.name
        for seed in (1, 2):
            spec = parse_spec(tmp_path / f"{job.stem}_s{seed}.toml")
            assert spec.name == f"{job.stem}_s{seed}" and spec.train.seed == seed
            # everything else is the thesis job's
            unseeded = spec.train.model_copy(update={"seed": None})
            assert spec.model_copy(update={"name": job.stem, "train": unseeded}) == parse_spec(job)
    # the thesis files are the single-seed sweep's, unchanged
    test_sweep_generation_matches_the_committed_jobs(tmp_path / "again", monkeypatch)


def test_the_future_work_sweep_lists_valid_unique_names_for_the_untested_hyperparameters(tmp_path):
    root = Path(__file__).resolve().parent.parent
    existed = (root / "jobs" / "future").exists()  # a developer's own expansion
    result = cli("sweep", "jobs/future.sweep.toml", "--dry-run", cwd=root)
    assert result.returncode == 0, result.stderr
    paths = [line.removeprefix("would write ") for line in result.stdout.splitlines() if line.startswith("would")]
    names = [Path(p).stem for p in paths]
    assert f"{len(names)} jobs" in result.stdout and len(names) == len(set(names)) > 60
    assert all(Path(p).parent == Path("jobs/future") for p in paths)  # the default --out: named by the file
    assert (root / "jobs" / "future").exists() == existed  # a dry run writes nothing
    for name in ("gan_betas0.9-0.999", "dcgan_betas0-0.9_s2", "wgan_clip0.005", "wgan_ncritic10_s1",
                 "gan_bsize32_lr0.0001", "wgan_bsize128_lr0.000025_s2", "dcgan_default_s1"):  # fmt: skip
        assert name in names, name
    # the grid's cell through the defaults is the default job, written once; a cell on an axis is the
    # thesis job of that value (gan_lr0.0001), with its name
    assert "gan_bsize64_lr0.0002" not in names and names.count("gan_default") == 1 and "gan_lr0.0001" in names
    written = write_jobs(root / "jobs/future.sweep.toml", tmp_path)
    for path in written:
        spec = parse_spec(path)  # every name passes the spec's own name rule
        assert spec.name == path.stem
    betas = parse_spec(tmp_path / "gan_betas0-0.99.toml").train
    assert betas.betas == (0.0, 0.99) and betas.seed is None
    assert parse_spec(tmp_path / "wgan_ncritic2_s2.toml").train.model_dump(exclude_none=True) == {
        "n_critic": 2, "seed": 2, "tf32": "convolutions"}  # fmt: skip


def test_a_group_may_have_its_own_seeds_and_design(tmp_path, prepared32):
    sweep = tmp_path / "s.sweep.toml"
    sweep.write_text(
        f'seeds = [0, 5]\n[base.data]\nprepared = "{prepared32}"\n'
        '[[group]]\nmodel = "wgan"\n[group.vary]\nclip_value = [0.02]\n'
        '[[group]]\nmodel = "dcgan"\nmode = "grid"\nseeds = [7]\n[group.vary]\n'
        "batchnorm_eps = [0.8, 0.00001]\nbetas = [[0.5, 0.9]]\n"
    )
    names = [p.stem for p in write_jobs(sweep, tmp_path / "jobs")]
    assert names == ["wgan_default", "wgan_default_s5", "wgan_clip0.02", "wgan_clip0.02_s5",
                     "dcgan_betas0.5-0.9_s7", "dcgan_betas0.5-0.9_bneps0.00001_s7"]  # fmt: skip
    spec = load_spec(tmp_path / "jobs" / "dcgan_betas0.5-0.9_bneps0.00001_s7.toml")
    assert (spec.train.batchnorm_eps, spec.train.betas, spec.train.seed) == (0.00001, (0.5, 0.9), 7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds = [1, 1]\n", "seeds: each seed once"),
        ("seeds = []\n", "seeds: List should have at least 1 item after validation, not 0"),
        ('seeds = [1]\n[base.train]\nseed = 3\n', "seeds: base.train.seed is set too; say the seeds in one place"),
        ("[[group]]\nmodel = 'gan'\n[group.vary]\nseed = [1, 2]\n",
         "group[0].vary.seed: say the seeds as `seeds = [...]`"),
        ("[[group]]\nmodel = 'gan'\n[group.vary]\nsample_every = [1, 2]\n",
         "group[0].vary.sample_every: how a run is bookkept, not what it trains; set it in [base.train]"),
    ],
)  # fmt: skip
def test_seeds_said_twice_or_in_the_wrong_place_are_one_error_line(tmp_path, text, message):
    sweep = tmp_path / "bad.sweep.toml"
    groups = "" if "[[group]]" in text else "[[group]]\nmodel = 'gan'\n"
    sweep.write_text(text + groups)
    result = cli("sweep", sweep, "--out", tmp_path / "jobs")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {sweep}: {message}"]


def test_two_entries_that_would_share_a_name_are_an_error_naming_both(tmp_path, prepared32, monkeypatch):
    import heartjobs.spec.sweep

    # two keys abbreviated alike, with values written alike: the names collide, the specs differ
    monkeypatch.setitem(heartjobs.spec.sweep.ABBREVIATIONS, "n_critic", "clip")
    sweep = tmp_path / "s.sweep.toml"
    sweep.write_text(
        f'[base.data]\nprepared = "{prepared32}"\n[[group]]\nmodel = "wgan"\n[group.vary]\n'
        "clip_value = [2.0]\nn_critic = [2]\n"
    )
    with pytest.raises(HeartjobsError) as caught:
        write_jobs(sweep, tmp_path / "jobs")
    assert str(caught.value) == (
        f"{sweep}: group[0] (wgan, clip_value = 2) and group[0] (wgan, n_critic = 2) would both be named wgan_clip2"
    )
    assert not (tmp_path / "jobs").exists()
