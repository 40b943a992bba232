"""Measuring a run against another heart than the one it trained on (`heartjobs evaluate RUN --against
PREPARED`, and [eval] against at the end of training), on two fixture hearts: phantoms drawn with different
seeds. The record names the other set (path, content hash) and says so on its summary line; it lands in
evals/ with a settings hash of its own, so it never joins the own set's metric curve nor chooses best.pt;
its FID equals one computed independently from the generator's images and the other set's images; the
other set's cached real features are reused; a set of another image size, a missing one or the run's own
is one line and exit 2 (a spec's before training); and the field leaves every spec hash as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.evaluation.driver import generated_batches
from heartjobs.evaluation.inception import FeatureExtractor
from heartjobs.evaluation.records import settings_hash
from heartjobs.evaluation.statistics import frechet_distance, mean_and_covariance
from heartjobs.evaluation.weights import resolve_weights
from heartjobs.records import Measurement
from heartjobs.spec.loading import load_spec
from heartjobs.store.checkpoint import list_checkpoints, load_snapshot
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.rundir import RunDir

from .conftest import cli, one_line_error, write_spec

# Small and cheap: untrained Inception at 64 dims, 16 generated images (4 for FRD, whose radiomic features
# cost about 0.1 s an image) against 6 real ones, one repeat. During training ([eval] every = 2, the last of
# 2 epochs) FRD is measured too, so a best checkpoint is kept (FID on untrained weights is not trusted to
# choose one).
EVAL = {
    "n_generated": 16, "repeats": 1, "dims": 64, "batch_size": 16, "weights": "untrained", "kid": False,
    "n_real": 6, "frd_n": 4, "every": 2, "during": {"n_generated": 16, "frd": True},
}  # fmt: skip
TRAIN = {"epochs": 2, "batch_size": 4, "device": "cpu", "checkpoint_every": 1, "keep_checkpoints": 2}


@pytest.fixture(scope="module")
def hearts(tmp_path_factory) -> dict[str, Path]:
    """The other fixture heart (a phantom of another seed than the training set's) at the training set's 32
    px, and at 16 px (a set of the wrong size)."""
    folder = tmp_path_factory.mktemp("hearts")
    generate(folder / "slices", PhantomParams(slices=12, size=64, seed=8), workers=1)
    prepare(folder / "slices", folder / "other_heart", PrepareParams(size=32), workers=1)
    prepare(folder / "slices", folder / "other_heart16", PrepareParams(size=16), workers=1)
    return {"other": folder / "other_heart", "small": folder / "other_heart16"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared32, hearts) -> dict:
    """A tiny GAN trained on the small phantom whose spec also measures it against the other heart at the
    end; what its run folder held right then (the tests below may add to it)."""
    folder = tmp_path_factory.mktemp("held_out")
    spec = write_spec(folder, "held", "gan", prepared32, eval={**EVAL, "against": [str(hearts["other"])]}, **TRAIN)
    result = cli("run", spec)
    assert result.returncode == 0, result.stderr
    run = folder / "artifacts" / "held" / "v0001"
    evals = sorted((run / "evals").glob("generator_*.json"))
    assert len(evals) == 1, evals
    return {
        "run": run,
        "log": result.stderr,  # the console's lines
        "own": Measurement.read(run / "fid.json"),
        "held_out": Measurement.read(evals[0]),
        "held_out_file": evals[0],
        "metrics_lines": (run / "metrics.jsonl").read_text().splitlines(),
        "best": (run / "best.pt").read_bytes(),
    }


def _other(hearts) -> PreparedSet:
    return PreparedSet.open(hearts["other"])


def test_the_spec_field_measures_the_other_heart_at_the_end_into_evals(trained, hearts):
    own, held_out, other = trained["own"], trained["held_out"], _other(hearts)
    assert own.against is None and "against" not in json.loads((trained["run"] / "fid.json").read_text())
    assert held_out.against == {"prepared": str(hearts["other"]), "content_hash": other.content_hash, "count": 12}
    assert held_out.n_real == held_out.frd["n_real"] == 6
    assert held_out.snapshot == own.snapshot == {"file": "generator.pt", "epoch": 2}
    assert trained["held_out_file"].name == f"generator_{held_out.settings_hash}.json"
    assert held_out.settings_hash != own.settings_hash
    # the same generator and images, another real set: other numbers
    assert held_out.fid_mean != own.fid_mean and held_out.frd["mean"] != own.frd["mean"]
    # metrics.jsonl: the measurement during training, the own one, then the held-out one
    assert [json.loads(line).get("against") for line in trained["metrics_lines"]] == [None, None, held_out.against]
    # each summary on the console; only the held-out one says against which set
    label = f"against other_heart ({other.content_hash[:12]}): FID {held_out.fid_mean:.3f}"
    assert label in trained["log"] and trained["log"].count("against other_heart") == 1


def test_evaluate_against_equals_an_independent_computation_and_reuses_the_cached_features(trained, hearts):
    run, other, first = trained["run"], _other(hearts), trained["held_out"]
    own_report = (run / "fid.json").read_bytes()
    # the other heart's real features were computed at the end of training: cached by the set's content
    fid_cache, frd_cache = Path(first.real_statistics["file"]), Path(first.frd["real_features"]["file"])
    assert fid_cache != Path(trained["own"].real_statistics["file"])
    written = {path: path.stat().st_mtime_ns for path in (fid_cache, frd_cache)}
    result = cli("evaluate", run, "--against", hearts["other"])
    assert result.returncode == 0, result.stderr
    assert f"(generator.pt, epoch 2): against other_heart ({other.content_hash[:12]}): FID " in result.stdout
    record = Measurement.read(trained["held_out_file"])  # the same measurement as at the end: the same file
    assert record.against == first.against and record.repeats == first.repeats
    assert record.real_statistics == {"file": str(fid_cache), "from_cache": True}
    assert record.frd["real_features"] == {"file": str(frd_cache), "from_cache": True}
    assert {path: path.stat().st_mtime_ns for path in written} == written  # read, not written again
    assert (run / "fid.json").read_bytes() == own_report  # the own measurement stays the own set's
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) == record.data()
    # FID by hand: the generator's images (repeat 0's seed) and the other heart's images through the same
    # Inception, then the Frechet distance of their means and covariances
    spec = RunDir(run).spec()
    generator = load_snapshot(RunDir(run), spec, None, torch.device("cpu")).generator
    extractor = FeatureExtractor(resolve_weights("untrained"), 64, torch.device("cpu"), 16)
    images = generated_batches(generator, spec.train.latent_dim, 16, 0, spec.eval, torch.device("cpu"))
    generated = extractor.of_batches(images, 16, "generated")
    real = extractor(other.tensor()[:6])
    expected = frechet_distance(*mean_and_covariance(real), *mean_and_covariance(generated))
    assert record.repeats[0]["fid"] == pytest.approx(expected, rel=1e-6)
    assert record.fid_mean != pytest.approx(trained["own"].fid_mean, rel=1e-3)


def test_a_held_out_measurement_never_joins_the_curve_or_chooses_best_pt(trained, hearts):
    run = RunDir(trained["run"])
    checkpoints = [p for p in list_checkpoints(run.checkpoints) if "_batch_" not in p.name]
    assert len(checkpoints) == 2
    for path in checkpoints:  # the other heart at every kept epoch: a curve of more epochs than the own one
        result = cli("evaluate", run.path, "--checkpoint", path, "--against", hearts["other"], "--no-frd")
        assert result.returncode == 0, result.stderr
    tag = run.metric_records()[-1].settings_hash
    assert {r.epoch for r in run.metric_records() if r.settings_hash == tag and r.against} == {1, 2}
    assert run.metric_curve(tag)["epochs"] == [1, 2]  # its own curve, when asked for by its hash
    # the curve the report draws is the own set's (measured at one epoch only: none), never the held-out one
    assert run.metric_curve() == {}
    # best.pt: chosen during training by the own set's measurements, and left as it was
    during = settings_hash(run.spec().eval.during_settings())
    best, choice = run.best_measured(during)
    assert best.epoch == 2 and best.against is None and choice.metric == "frd"
    assert (run / "best.pt").read_bytes() == trained["best"]
    refused = cli("evaluate", run.path, "--all-checkpoints", "--against", hearts["other"])
    one_line_error(refused, "--all-checkpoints", "--against")


def test_measuring_a_held_out_set_the_end_of_training_failed_on_finishes_the_run(trained, hearts):
    # as a run is left when its own set was measured and [eval] against's set could not be (moved away
    # meanwhile): failed, in its evaluating phase; measured later with the spec's settings, it is done
    run = RunDir(trained["run"])
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "failed", "phase": "evaluating"}))
    assert cli("evaluate", run.path, "--against", hearts["other"]).returncode == 0
    assert run.status().state == "done" and run.status().phase is None


def test_a_run_is_done_only_once_every_held_out_set_of_its_spec_is_measured(trained, hearts, tmp_path):
    # as left when [eval] against's set failed at the end: its record is not there; measuring a set the spec
    # does not name must not finish the run, measuring the one it names does
    run = RunDir(shutil.copytree(trained["run"], tmp_path / "artifacts" / "held" / "v0001"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines if '"against"' not in line))
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "failed", "phase": "evaluating"}))
    third = tmp_path / "third_heart"  # 32 px too, other images: a set the spec does not name
    prepare(Path(hearts["other"]).parent / "slices", third, PrepareParams(size=32, every=2), workers=1)
    assert cli("evaluate", run.path, "--against", third).returncode == 0
    assert run.status().state == "failed"
    assert cli("evaluate", run.path, "--against", hearts["other"]).returncode == 0
    assert run.status().state == "done"


def test_a_set_of_another_size_a_missing_one_or_the_own_is_one_line(trained, hearts, prepared32, tmp_path):
    run = trained["run"]
    before = sorted(p.name for p in (run / "evals").iterdir()), (run / "metrics.jsonl").read_bytes()
    wrong = cli("evaluate", run, "--against", hearts["small"])
    one_line_error(wrong, f"--against {hearts['small']}: 16 px images", "32 px", "--size 32")
    missing = cli("fid", run, "--against", tmp_path / "nowhere")
    one_line_error(missing, f"--against {tmp_path / 'nowhere'}: no prepared set here")
    own = cli("fid", run, "--against", prepared32)
    one_line_error(own, "--against", "the run's own training set")
    assert (sorted(p.name for p in (run / "evals").iterdir()), (run / "metrics.jsonl").read_bytes()) == before


def test_a_spec_against_a_wrong_set_is_refused_before_training(tmp_path, prepared32, hearts):
    eval_ = {**EVAL, "against": [str(hearts["small"])]}
    spec = write_spec(tmp_path, "wrong_size", "gan", prepared32, eval=eval_, **TRAIN)
    one_line_error(cli("validate", spec), f"{spec}: eval.against: {hearts['small']}: 16 px images")
    one_line_error(cli("run", spec), f"{spec}: eval.against: ")
    assert not (tmp_path / "artifacts").exists()
    unmeasured = write_spec(
        tmp_path, "unmeasured", "gan", prepared32, eval={"measure": False, "against": [str(hearts["other"])]}
    )
    one_line_error(cli("validate", unmeasured), f"{unmeasured}: eval.against: measured at the end of training")


def test_the_against_field_leaves_the_spec_hash_as_it_was(tmp_path, prepared32, hearts):
    plain = load_spec(write_spec(tmp_path, "same", "gan", prepared32, eval={"weights": "untrained"}))
    shutil.move(tmp_path / "same.toml", tmp_path / "plain.toml")
    eval_ = {"weights": "untrained", "against": [str(hearts["other"])]}
    held_out = load_spec(write_spec(tmp_path, "same", "gan", prepared32, eval=eval_))
    assert held_out.eval.against == (hearts["other"],)
    assert held_out.spec_hash == plain.spec_hash and "against" not in held_out.hash_payload()["eval"]
    assert settings_hash(held_out.eval) == settings_hash(plain.eval)
    assert settings_hash(plain.eval, "0" * 64) != settings_hash(plain.eval)
