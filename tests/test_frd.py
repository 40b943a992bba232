"""FRD with the real frd-score and pyradiomics: equal to frd-score's own CLI on the images heartjobs saved,
the real features cached and reused, the differences named with their sign, and a missing install found
before any training."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import HeartjobsError
from heartjobs.evaluation import radiomics
from heartjobs.store.prepared import PreparedSet

from .conftest import cli, run_cli, strict_json_files, write_spec


@pytest.fixture(scope="module")
def prepared64(tmp_path_factory, phantom_dir):
    """The small phantom (12 slices) at 64 px."""
    out = tmp_path_factory.mktemp("frd") / "phantom64"
    prepare(phantom_dir, out, PrepareParams(size=64), workers=1)
    return out


def _cli_frd(real, generated, *options: str) -> float:
    result = subprocess.run(
        [sys.executable, "-m", "frd_score", str(real), str(generated), *options],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return float(re.search(r"FRD \(v1\): ([-0-9.eE+]+)", result.stdout).group(1))


@pytest.mark.slow
def test_frd_equals_frd_scores_cli_on_the_images_it_saved(tmp_path, prepared64):
    spec = write_spec(tmp_path, "frd_gan", "gan", prepared64, epochs=1, device="cpu")
    assert cli("run", spec).returncode == 0
    run_dir = tmp_path / "artifacts" / "frd_gan" / "v0001"
    saved = tmp_path / "saved"
    args = ["--n", "24", "--repeats", "2", "--frd-n", "16", "--weights", "untrained", "--dims", "64"]
    result = cli("fid", run_dir, *args, "--batch-size", "8", "--frd", "--save-images", saved)
    assert result.returncode == 0, result.stderr
    assert re.search(r"FRD [0-9.]+ \+- [0-9.]+ \(v1, n=16 x 2, real n=12\); generated: (higher|lower) ", result.stdout)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    frd = record["frd"]
    assert (frd["n_generated"], frd["n_real"], frd["version"]) == (16, 12, "v1")
    assert 300 < frd["features_used"] <= frd["features_extracted"]
    assert len(frd["top_differences"]) == 10 and set(frd["versions"]) >= {"frd_score", "pyradiomics"}
    assert any(w.startswith("frd_n = 16 <= ") and "singular" in w for w in record["warnings"])
    # what was saved: the real set, every generated image of each repeat, and FRD's subset of them
    assert len(list((saved / "real").glob("*.png"))) == 12
    assert [len(list((saved / f"repeat_{r}").glob("*.png"))) for r in (0, 1)] == [24, 24]
    assert [len(list((saved / f"repeat_{r}_frd").glob("*.png"))) for r in (0, 1)] == [16, 16]
    assert "python -m frd_score real repeat_0_frd" in (saved / "README.txt").read_text()
    assert record["saved_images"] == str(saved.resolve())
    # the reference tool on those files gives each repeat's value
    for r in (0, 1):
        reference = _cli_frd(saved / "real", saved / f"repeat_{r}_frd")
        assert record["repeats"][r]["frd"] == pytest.approx(reference, rel=1e-6)
    assert record["repeats"][0]["frd"] != record["repeats"][1]["frd"]  # different seeds, different images
    assert strict_json_files(run_dir) >= 4  # status, resolved spec, losses, metrics.jsonl...: all strict JSON
    # the reference backend on the same images: the same values, in a record of its own beside the default's
    reference_run = cli("fid", run_dir, *args, "--batch-size", "8", "--frd-backend", "pyradiomics")
    assert reference_run.returncode == 0, reference_run.stderr
    [path] = [p for p in (run_dir / "evals").glob("*_pyradiomics.json")]
    assert f"recorded in {path}" in reference_run.stderr
    by_pyradiomics = json.loads(path.read_text())
    assert by_pyradiomics["frd"]["backend"] == "pyradiomics" and record["frd"]["backend"] == "torch"
    for r in (0, 1):
        assert by_pyradiomics["repeats"][r]["frd"] == pytest.approx(record["repeats"][r]["frd"], rel=1e-6)
    # an existing folder is refused before anything is measured
    again = cli("fid", run_dir, *args, "--save-images", saved)
    assert again.returncode == 2 and "exists and is not an empty folder" in again.stderr


def test_real_radiomic_features_are_cached_and_reused(prepared64):
    prepared = PreparedSet.open(prepared64)
    first = radiomics.real_features(prepared, 6, workers=1)
    assert first.cached is False and first.features.values.shape[0] == 6
    second = radiomics.real_features(prepared, 6, workers=1)
    assert second.cached is True and second.path == first.path
    assert second.features.names == first.features.names
    np.testing.assert_array_equal(second.features.values, first.features.values)
    # it really is the cache that answers: change it, and the change comes back
    with np.load(first.path) as data:
        arrays = dict(data)
    np.savez(first.path, names=arrays["names"], values=arrays["values"] + 1.0)
    np.testing.assert_array_equal(radiomics.real_features(prepared, 6).features.values, first.features.values + 1.0)
    # another number of real images is another entry
    assert radiomics.real_features(prepared, 5, workers=1).path != first.path
    # a cache file cut short (a full disk, a copy from elsewhere) is a miss: extracted again and replaced
    first.path.write_bytes(first.path.read_bytes()[:100])
    again = radiomics.real_features(prepared, 6, workers=1)
    assert again.cached is False
    np.testing.assert_array_equal(again.features.values, first.features.values)
    assert radiomics.real_features(prepared, 6, workers=1).cached is True


def test_the_features_that_differ_most_are_named_with_their_direction(prepared64):
    images = np.asarray(PreparedSet.open(prepared64).images)
    real = radiomics.extract(images, "real", workers=1)
    brighter = radiomics.extract(np.clip(images.astype(int) + 30, 0, 255).astype(np.uint8), "brighter", workers=1)
    result = radiomics.frechet_radiomics_distance(real, brighter)
    near = radiomics.extract(np.clip(images.astype(int) + 2, 0, 255).astype(np.uint8), "a little brighter", workers=1)
    assert result.frd > radiomics.frechet_radiomics_distance(real, near).frd
    top = radiomics.top_differences([result], 3)
    # pyradiomics z-scores each image (normalize: true), so the shift shows in the raw image mean
    assert top[0]["feature"] == "diagnostics_Image-original_Mean" and top[0]["shift_sd"] > 5
    assert radiomics.describe_difference(top[0]).startswith("higher diagnostics_Image-original_Mean (+")


def test_a_job_without_frd_installed_fails_before_training(tmp_path, prepared64):
    # a package that cannot be imported, ahead of the real one on the path of a fresh process (a real
    # process: it also shows that nothing on the way to the check imports it early): frd-score, which
    # both backends need (its distance), then pyradiomics, which only the pyradiomics backend needs
    def broken(package: str) -> dict:
        folder = tmp_path / f"broken_{package}" / package
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text(f"raise ImportError('{package} was not built')\n")
        return {"PYTHONPATH": str(folder.parent)}

    spec = write_spec(tmp_path, "no_frd", "gan", prepared64, eval={"weights": "untrained"}, epochs=1, device="cpu")
    result = run_cli("run", spec, env=broken("frd_score"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"{spec}: eval.frd:" in error and "frd_score was not built" in error and "make install" in error
    assert not (tmp_path / "artifacts").exists()  # nothing trained
    # without pyradiomics, the torch backend (the default) is fine and the pyradiomics backend is not
    no_pyradiomics = broken("radiomics")
    assert run_cli("validate", spec, env=no_pyradiomics).returncode == 0
    reference = {"weights": "untrained", "frd_backend": "pyradiomics"}
    spec = write_spec(tmp_path, "no_frd", "gan", prepared64, eval=reference, epochs=1, device="cpu")
    result = run_cli("validate", spec, env=no_pyradiomics)
    assert result.returncode == 2 and "radiomics was not built" in result.stderr and "Traceback" not in result.stderr
    # with FRD off, the same spec is fine on the same machine
    spec = write_spec(tmp_path, "no_frd", "gan", prepared64, eval={"frd": False, "weights": "untrained"}, epochs=1)
    assert run_cli("validate", spec, env=broken("frd_score")).returncode == 0


def test_constant_images_count_as_unmeasurable_not_as_a_crash(prepared64):
    images = np.asarray(PreparedSet.open(prepared64).images)
    real = radiomics.extract(images, "real", workers=1)
    # a half-collapsed generator: some images flat (per_image_minmax makes a flat image all zeros)
    mixed = images.copy()
    mixed[:4] = 0
    generated = radiomics.extract(mixed, "mixed", workers=1)
    assert np.isnan(generated.values[:4]).all() and np.isfinite(generated.values[4:]).any()
    result = radiomics.frechet_radiomics_distance(real, generated)
    assert result.n_generated == len(images) - 4 and np.isfinite(result.frd)
    # a fully collapsed one: FRD is undefined, and says so in one line (measure() then keeps FID and KID)
    with pytest.raises(HeartjobsError, match=r"FRD unmeasurable: none of the 12 images has radiomic features \(flat\)"):
        radiomics.extract(np.full_like(images, 128), "flat", workers=1)
    with pytest.raises(HeartjobsError, match="fewer than 2 images with finite features in the generated set"):
        radiomics.frechet_radiomics_distance(real, radiomics.extract(mixed[:5], "one left", workers=1))


def test_the_save_images_switch_keeps_the_own_measurements_images_in_the_run(tmp_path, prepared64):
    from heartjobs.evaluation.runs import evaluate_run
    from heartjobs.runner.lifecycle import run_job
    from heartjobs.spec.schema import EvalSection
    from heartjobs.store.rundir import RunDir

    settings = {"weights": "untrained", "n_generated": 8, "repeats": 1, "dims": 64, "batch_size": 8}
    settings |= {"frd": False, "kid": False, "save_images": True}
    run_dir = run_job(write_spec(tmp_path, "saver", "gan", prepared64, eval=settings, epochs=1, device="cpu"))
    images = run_dir / RunDir.EVAL_IMAGES
    assert len(list((images / "real").glob("*.png"))) == 12 and len(list((images / "repeat_0").glob("*.png"))) == 8
    assert not (run_dir / f"{RunDir.EVAL_IMAGES}.partial").exists()
    assert json.loads((run_dir / "fid.json").read_text())["saved_images"] == str(images.resolve())
    # another measurement of the run (other settings) leaves the own measurement's images alone
    before = sorted(p.name for p in (images / "repeat_0").iterdir())
    evaluate_run(run_dir, EvalSection(**{**settings, "n_generated": 4}))
    assert sorted(p.name for p in (images / "repeat_0").iterdir()) == before


def test_a_copycat_generator_leaves_frd_unmeasurable_with_its_reason_in_strict_json(tmp_path, prepared64):
    """A generator that returns the real slices themselves: FID and KID are measured, FRD (log 0) is
    recorded as unmeasurable with its reason, on the console line and in the report, and the record is
    strict JSON."""
    import torch

    from heartjobs import atomic
    from heartjobs.evaluation.driver import measure
    from heartjobs.evaluation.records import summary_line
    from heartjobs.records import Measurement
    from heartjobs.report.summary import ReportRow, cells, unmeasurable_markdown
    from heartjobs.spec.schema import EvalSection
    from heartjobs.store import best

    prepared = PreparedSet.open(prepared64)
    real = torch.from_numpy(np.asarray(prepared.images)).float()[:, None] / 127.5 - 1.0

    class Copycat(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return real[: len(z)]

    settings = EvalSection(
        n_generated=12, repeats=1, dims=64, batch_size=12, weights="untrained", kid_subset_size=6, frd_n=12
    )
    result = measure(Copycat(), 4, prepared, settings, torch.device("cpu"))
    assert result["fid_mean"] == pytest.approx(0.0, abs=1e-3) and "kid_mean" in result
    frd = result["frd"]
    assert "mean" not in frd and frd["backend"] == "torch"
    assert frd["error"].startswith("FRD unmeasurable: the two sets have the same features")
    assert "n_real=12, n_generated=12 against" in frd["error"] and "covariance ranks" in frd["error"]
    assert "frd" not in result["repeats"][0]
    atomic.write_json(tmp_path / "fid.json", result)
    strict = json.loads((tmp_path / "fid.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert strict["frd"]["error"] == frd["error"]
    record = Measurement(metric="fid", run="r", job="copycat", spec_hash="0", snapshot={"file": "g"}, **result)
    assert "FRD unmeasurable: the two sets have the same features" in summary_line(record)
    row = ReportRow(job="copycat", frd_unmeasurable=frd["error"]).model_dump()
    assert cells(row)[6] == "unmeasurable"
    assert "## FRD unmeasurable" in unmeasurable_markdown([row]) and "covariance ranks" in unmeasurable_markdown([row])
    assert best.distrust(record, "frd") == "unmeasurable"

    # half collapsed: 4 of the 12 images constant. FRD v1 leaves them out: said, and the counts recorded;
    # with the round-off columns dropped, the value is named as another feature space, which best never picks
    class HalfCollapsed(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(real[:4]), real[4:]])[: len(z)] * 0.9

    dropping = settings.model_copy(update={"frd_drop_degenerate": True})
    result = measure(HalfCollapsed(), 4, prepared, dropping, torch.device("cpu"))
    frd = result["frd"]
    assert (frd["n_generated"], frd["n_generated_used"], frd["n_real_used"]) == (12, 8, 12)
    assert any(w.startswith("FRD: 4 of the 12 generated images have no radiomic features") for w in result["warnings"])
    assert frd["version"] == "v1+drop_degenerate" and frd["degenerate_dropped"] >= 1
    record = Measurement(metric="fid", run="r", job="half", spec_hash="0", snapshot={"file": "g"}, **result)
    assert "(v1+drop_degenerate, n=12 x 1" in summary_line(record)
    assert best.distrust(record, "frd") == "FRD v1+drop_degenerate, not FRD v1"
