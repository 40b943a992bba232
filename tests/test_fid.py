"""FID and KID with real pytorch-fid code: its Inception, its Fréchet distance and its CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import HeartjobsError
from heartjobs.evaluation.driver import generated_batches
from heartjobs.evaluation.inception import FeatureExtractor
from heartjobs.evaluation.runs import evaluate_run
from heartjobs.evaluation.statistics import frechet_distance, kernel_inception_distance, mean_and_covariance
from heartjobs.evaluation.weights import STANDARD_FILENAME, resolve_weights
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.schema import EvalSection
from heartjobs.store.checkpoint import load_snapshot
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.rundir import RunDir

from .conftest import cli, write_spec

# Small but not singular: 160 real images, dims 64 (Inception's first block), untrained weights. FRD has
# tests of its own (test_frd.py).
EVAL = {
    "n_generated": 100, "repeats": 2, "dims": 64, "batch_size": 50, "weights": "untrained", "kid_subset_size": 50,
    "frd": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def prepared160(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fid_data")
    generate(folder / "phantom", PhantomParams(slices=160, size=64, seed=11))
    prepare(folder / "phantom", folder / "prepared", PrepareParams(size=32, export_png=True))
    return folder / "prepared"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, prepared160):
    folder = tmp_path_factory.mktemp("fid_run")
    spec = write_spec(folder, "fid_gan", "gan", prepared160, eval={"measure": False, **EVAL}, epochs=2, device="cpu")
    return run_job(spec)


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(resolve_weights("untrained"), 64, torch.device("cpu"), 50)


@pytest.mark.parametrize("dims", [64, 192])
def test_frechet_distance_matches_pytorch_fid(dims):
    rng = np.random.default_rng(dims)
    a, b = rng.normal(size=(400, dims)), rng.normal(0.2, 1.3, size=(400, dims))
    ours = frechet_distance(*mean_and_covariance(a), *mean_and_covariance(b))
    theirs = calculate_frechet_distance(*mean_and_covariance(a), *mean_and_covariance(b))
    assert ours == pytest.approx(theirs, rel=1e-9)
    same = frechet_distance(*mean_and_covariance(a), *mean_and_covariance(a))
    assert abs(same) < 1e-6 * np.trace(np.cov(a, rowvar=False))


def test_kid_is_near_zero_for_one_distribution_and_large_for_another():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(300, 32)), rng.normal(size=(300, 32)), rng.normal(0.5, 1, size=(300, 32))
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    other, _ = kernel_inception_distance(a, c, subsets=20, subset_size=100)
    assert abs(same) < 0.02 < other


@pytest.mark.slow
def test_fid_orders_self_halves_and_noise(prepared160, extractor):
    images = PreparedSet.open(prepared160).tensor()
    features = extractor(images)
    halves = np.random.default_rng(0).permutation(len(features)).reshape(2, -1)  # two random halves
    stats = [mean_and_covariance(f) for f in (features, features[halves[0]], features[halves[1]])]
    noise = torch.randint(0, 256, images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    noise_stats = mean_and_covariance(extractor(noise))
    itself = frechet_distance(*stats[0], *stats[0])
    halves = frechet_distance(*stats[1], *stats[2])
    against_noise = frechet_distance(*stats[0], *noise_stats)
    # A set against itself is zero up to sqrtm's rounding (about 1e-9 here, depending on the BLAS),
    # orders of magnitude below two disjoint halves of one set, which are far below real vs noise.
    assert abs(itself) < 1e-3 * halves
    assert against_noise > 100 * halves


@pytest.mark.slow
def test_report_is_complete_consistent_and_reproducible(trained_run):
    settings = RunDir(trained_run).spec().eval
    report = evaluate_run(trained_run).data()
    assert json.loads((trained_run / "fid.json").read_text()) == report
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == report
    fids = [r["fid"] for r in report["repeats"]]
    assert [r["seed"] for r in report["repeats"]] == [0, 1]
    assert report["fid_mean"] == pytest.approx(np.mean(fids)) and report["fid_std"] == pytest.approx(np.std(fids))
    assert report["kid_mean"] == pytest.approx(np.mean([r["kid"] for r in report["repeats"]]))
    assert report["snapshot"] == {"file": "generator.pt", "epoch": 2}
    assert (report["n_generated"], report["n_real"], report["dims"]) == (100, 160, 64)
    assert report["normalize"] == "fixed" and report["standard_weights"] is False
    assert report["weights"]["kind"] == "untrained" and len(report["weights"]["sha256"]) == 64
    assert set(report["versions"]) == {"heartjobs", "torch", "pytorch_fid", "scipy", "numpy"}
    assert any("not comparable" in w for w in report["warnings"])
    assert report["seconds"] > 0 and report["device"] == "cpu"
    # the same evaluation again: the same numbers
    again = evaluate_run(trained_run, settings).data()
    assert again["repeats"] == report["repeats"]


@pytest.mark.slow
def test_real_statistics_are_cached_and_reused(trained_run):
    settings = EvalSection(**{**EVAL, "repeats": 1, "normalize": "per_image_minmax"})  # a fresh cache key
    first = evaluate_run(trained_run, settings).data()
    assert first["real_statistics"]["from_cache"] is False
    cache = first["real_statistics"]["file"]
    second = evaluate_run(trained_run, settings).data()
    assert second["real_statistics"] == {"file": cache, "from_cache": True}
    assert second["repeats"] == first["repeats"]
    # prove the second evaluation read the cache rather than recomputing: shift the cached mean
    with np.load(cache) as data:
        arrays = dict(data)
    np.savez(cache, **{**arrays, "mu": arrays["mu"] + 1.0})
    shifted = evaluate_run(trained_run, settings).data()
    assert shifted["repeats"][0]["fid"] > first["repeats"][0]["fid"] + 1.0
    # a cache file cut short is a miss: computed again, the first numbers back
    Path(cache).write_bytes(Path(cache).read_bytes()[:100])
    again = evaluate_run(trained_run, settings).data()
    assert again["real_statistics"]["from_cache"] is False and again["repeats"] == first["repeats"]
    assert (trained_run / "evals").is_dir()  # not the spec's settings: not fid.json


@pytest.mark.slow
def test_equals_pytorch_fid_cli_on_the_same_png_files(tmp_path, trained_run, prepared160):
    settings = EvalSection(**{**EVAL, "repeats": 1})
    report = evaluate_run(trained_run, settings).data()
    # The same generated images, written as PNG files, and the real set's PNGs (--export-png).
    spec = RunDir(trained_run).spec()
    snapshot = load_snapshot(RunDir(trained_run), spec, None, torch.device("cpu"))
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    batches = generated_batches(snapshot.generator, spec.train.latent_dim, 100, 0, settings, torch.device("cpu"))
    for i, image in enumerate(torch.cat(list(batches))):
        Image.fromarray(image[0].numpy()).save(fakes / f"{i:04d}.png")
    # pytorch-fid finds "its" weights in TORCH_HOME: put the same untrained file there.
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / STANDARD_FILENAME).symlink_to(report["weights"]["path"])
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home")}
    for real in (prepared160 / "png", report["real_statistics"]["file"]):
        result = subprocess.run(
            [sys.executable, "-m", "pytorch_fid", str(real), str(fakes), "--dims", "64", "--device", "cpu",
             "--num-workers", "0", "--batch-size", "50"],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        cli_fid = float(re.search(r"FID:\s+([0-9.eE+-]+)", result.stdout).group(1))
        assert report["fid_mean"] == pytest.approx(cli_fid, rel=1e-3), real


def test_the_untrained_weights_hash_alike_in_every_cache(tmp_path, monkeypatch):
    # their sha256 keys the ladder's verdicts and the real statistics: made in another cache (another
    # machine, a CI run), the same weights must hash the same
    hashes = set()
    for cache in ("one", "two"):
        monkeypatch.setenv("HEARTJOBS_CACHE", str(tmp_path / cache))
        hashes.add(resolve_weights("untrained").sha256)
    assert len(hashes) == 1


def test_standard_weights_with_a_wrong_hash_are_refused(tmp_path, monkeypatch):
    untrained = resolve_weights("untrained").path
    monkeypatch.setenv("HEARTJOBS_FID_WEIGHTS", str(untrained))
    with pytest.raises(HeartjobsError, match="does not match the standard file .*refusing it as 'standard'"):
        resolve_weights("standard")
    explicit = resolve_weights(str(untrained))  # accepted when named explicitly, and marked non-standard
    assert explicit.kind == "path" and not explicit.standard
    monkeypatch.delenv("HEARTJOBS_FID_WEIGHTS")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(HeartjobsError, match="make fid-weights"):
        resolve_weights("standard", download=False)
    # inside the Docker image the routes are the container's: the ./weights mount, or a rebuild
    monkeypatch.setenv("HEARTJOBS_IMAGE", "1")
    container_routes = r"in the container: put .* in \./weights .*FID_WEIGHTS=download"
    with pytest.raises(HeartjobsError, match=container_routes) as refused:
        resolve_weights("standard", download=False)
    assert "make fid-weights" not in str(refused.value)


def test_a_job_whose_weights_are_missing_fails_before_training_with_the_fix(tmp_path, prepared160):
    spec = write_spec(tmp_path, "no_weights", "gan", prepared160, eval={"n_generated": 10}, epochs=1, device="cpu")
    # a named file that is not there
    result = cli("run", spec, env={"HEARTJOBS_FID_WEIGHTS": str(tmp_path / "missing.pth")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"{spec}: eval.weights:" in error and "missing.pth: no such file" in error and "heartjobs fid" in error
    # no file and no way to download it now (a proxy that refuses every connection): nothing trained
    offline = {"TORCH_HOME": str(tmp_path / "empty_torch_home"), "https_proxy": "http://127.0.0.1:9"}
    offline |= {"HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    offline |= {"HEARTJOBS_FID_WEIGHTS": None}
    result = cli("run", spec, env=offline)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "cannot be downloaded now" in error and "make fid-weights" in error and "measure = false" in error
    assert not (tmp_path / "artifacts").exists()  # no run folder: nothing was trained
    # validate says the same, for every spec it is given
    validate = cli("validate", spec, env=offline)
    assert validate.returncode == 2 and "eval.weights" in validate.stderr


def test_the_copied_fid_inception_agrees_with_pytorch_fids_own_at_the_pinned_version():
    # weights.py rebuilds pytorch-fid's fid_inception_v3() from its private parts; only the pin makes
    # that safe. The installed version is the pinned one, and the two builds have the same modules.
    import importlib.metadata as md
    from pathlib import Path

    from pytorch_fid import inception as pfi

    from heartjobs.evaluation.weights import _fid_inception_skeleton, _pytorch_fid_loading

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    pin = re.search(r'"pytorch-fid==([^"]+)"', pyproject).group(1)
    assert md.version("pytorch-fid") == pin == "0.3.0"
    ours = _fid_inception_skeleton()
    with _pytorch_fid_loading(ours.state_dict()):
        theirs = pfi.fid_inception_v3()  # loads our state dict strictly: the same keys and shapes
    assert [(n, type(m).__name__) for n, m in ours.named_modules()] == [
        (n, type(m).__name__) for n, m in theirs.named_modules()
    ]


def test_a_generator_from_another_run_is_refused(tmp_path, prepared32):
    import shutil

    import torch as _torch

    one = run_job(write_spec(tmp_path, "one", "gan", prepared32, epochs=1, device="cpu"))
    other = run_job(write_spec(tmp_path, "other", "gan", prepared32, epochs=1, latent_dim=50, device="cpu"))
    shutil.copy(other / "generator.pt", one / "generator.pt")  # copied in by hand
    result = cli("fid", one, "--weights", "untrained", "--dims", "64", "--n", "10", "--repeats", "1", "--no-frd")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "generator.pt: spec_hash: made by spec" in result.stderr and "another run's generator" in result.stderr
    # one whose weights do not fit its own architecture record (this run's spec hash and latent_dim, the other
    # run's weights): a one-line error too
    payload = _torch.load(other / "generator.pt", weights_only=False)
    payload["latent_dim"] = 100
    payload["spec_hash"] = json.loads((one / "resolved.json").read_text())["spec_hash"]
    _torch.save(payload, one / "generator.pt")
    result = cli("fid", one, "--weights", "untrained", "--dims", "64", "--n", "10", "--repeats", "1", "--no-frd")
    assert result.returncode == 2 and "not a generator this architecture can load" in result.stderr
    assert "Traceback" not in result.stderr
