"""Fidelity, diversity and memorisation apart, through the metric driver: a copycat generator (training
slices returned) is flagged as memorised in every space and a generator of noise is not; a trained GAN is
not flagged; the record carries every number with its protocol, the console says them, the closest pairs
are drawn in the run folder; a measurement stopped part-way goes on to the same values; RadImageNet's
feature space runs through the same driver from a user-supplied file, and a file that does not fit is
refused before any training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.errors import JobInterrupted
from heartjobs.evaluation.driver import MEMORISATION_FIGURE, measure
from heartjobs.evaluation.manifold import prdc
from heartjobs.evaluation.metrics import METRICS
from heartjobs.evaluation.records import beyond_fid_line, summary_line
from heartjobs.evaluation.repeatlog import RepeatLog
from heartjobs.records import Measurement
from heartjobs.spec.schema import EvalSection
from heartjobs.store.prepared import PreparedSet

from .conftest import cli, one_line_error, write_spec

# 120 real slices at 32 px: enough for the 1 % leave-one-out threshold and k = 5 neighbours; FRD's
# radiomics on the first 60 generated images of each repeat.
EVAL = {
    "n_generated": 60, "repeats": 2, "dims": 64, "batch_size": 60, "weights": "untrained", "kid_subset_size": 50,
    "frd_n": 60, "ms_ssim_pairs": 200,
}  # fmt: skip


@pytest.fixture(scope="module")
def prepared120(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fd_data")
    generate(folder / "phantom", PhantomParams(slices=120, size=64, seed=5))
    prepare(folder / "phantom", folder / "prepared", PrepareParams(size=32), workers=1)
    return PreparedSet.open(folder / "prepared")


class Copycat(nn.Module):
    """Returns training slices exactly: image i of the prepared set for the i-th latent vector drawn."""

    def __init__(self, images: np.ndarray):
        super().__init__()
        self.register_buffer("images", torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pick = (z[:, 0].abs() * 1e4).long() % len(self.images)  # a different slice per latent, deterministically
        return self.images[pick]


class Noise(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(z[0, 0].abs() * 1e6))
        return torch.rand(len(z), 1, 32, 32, generator=g) * 2 - 1


def _measure(generator, prepared, **settings) -> dict:
    return measure(generator, 8, prepared, EvalSection(**{**EVAL, **settings}), torch.device("cpu"))


@pytest.fixture(scope="module")
def copycat(prepared120) -> dict:
    """The copycat measured once by every metric (FRD's too: the radiomic space)."""
    return _measure(Copycat(np.asarray(prepared120.images)), prepared120, repeats=1)


@pytest.mark.slow
def test_a_copycat_is_flagged_in_every_space_and_noise_in_none(prepared120, copycat):
    memorisation = copycat["memorisation"]
    assert memorisation["memorised"] is True
    assert set(memorisation["spaces"]) == {"pixels", "inception", "radiomics"}
    for space, block in memorisation["spaces"].items():
        assert block["memorised"] is True, space
        assert block["fraction"]["mean"] > 0.9 and block["baseline"] == "leave-one-out training slices"
        assert (
            block["n_training"] == 120
            and block["pairs"][0]["distance"] < block["threshold"]
            or (block["threshold"] == 0 and block["pairs"][0]["distance"] == 0)
        )
    assert memorisation["spaces"]["pixels"]["exact_copies"] == 60  # every image of repeat 0 is a training slice
    # training slices are as realistic as real ones: precision near 1, unlike noise's
    assert copycat["prdc"]["precision"]["mean"] > 0.8

    noise = _measure(Noise(), prepared120, repeats=1, frd=False)  # FRD's radiomics: slow on singular sets
    assert set(noise["memorisation"]["spaces"]) == {"pixels", "inception"}
    assert noise["memorisation"]["memorised"] is False
    assert all(not block["memorised"] for block in noise["memorisation"]["spaces"].values())
    assert noise["prdc"]["precision"]["mean"] < copycat["prdc"]["precision"]["mean"]
    assert noise["prdc"]["coverage"]["mean"] < copycat["prdc"]["coverage"]["mean"]


@pytest.mark.slow
def test_the_record_holds_each_number_with_its_protocol_and_equals_the_references(copycat):
    result = copycat
    first = result["repeats"][0]
    # every ranked number of every metric the settings ask for, in each repeat
    for metric in METRICS.values():
        for key in metric.keys:
            assert all(key in entry for entry in result["repeats"]), key
            assert key in result["ladder"]
    prdc_block = result["prdc"]
    assert (prdc_block["k"], prdc_block["network"], prdc_block["dims"]) == (5, "inception", 64)
    assert (prdc_block["n_real"], prdc_block["n_generated"]) == (120, 60)
    values = [e["recall"] for e in result["repeats"]]
    assert prdc_block["recall"] == {"mean": pytest.approx(np.mean(values)), "std": pytest.approx(np.std(values))}
    assert result["prdc_radiomics"]["features_used"] > 300 and result["prdc_radiomics"]["space"] == "radiomics"
    ms_ssim = result["ms_ssim"]
    assert (ms_ssim["pairs"], ms_ssim["n_generated"], ms_ssim["n_real"]) == (200, 60, 120)
    assert ms_ssim["protocol"]["scales"] == 2 and ms_ssim["protocol"]["window"] == 11  # fitted to 32 px
    assert first["ms_ssim_ratio"] == pytest.approx(first["ms_ssim_generated"] / first["ms_ssim_real"])
    # the copycat's sets are real slices: its MS-SSIM is the real set's, as diverse
    assert 0.7 < ms_ssim["ratio"]["mean"] < 1.4
    assert json.loads(json.dumps(result, allow_nan=False))  # strict JSON: no NaN or inf anywhere
    # the driver's PRDC equals the prdc package on the same features (the repeat's own numbers)
    from prdc import compute_prdc

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(120, 64)), rng.normal(0.3, 1, size=(60, 64))
    ours, theirs = prdc(real, fake, 5), compute_prdc(real, fake, 5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6)


def test_a_trained_gan_is_not_flagged_and_its_run_shows_every_number(tmp_path, prepared120):
    settings = {**EVAL, "repeats": 1, "frd": False}
    spec = write_spec(tmp_path, "fd_gan", "gan", prepared120.path, eval=settings, epochs=3, device="cpu")
    result = cli("run", str(spec))
    assert result.returncode == 0, result.stderr
    run = next((tmp_path / "artifacts" / "fd_gan").glob("v*"))
    record = json.loads((run / "fid.json").read_text())
    assert record["memorisation"]["memorised"] is False
    assert record["memorisation"]["figure"] == MEMORISATION_FIGURE and (run / MEMORISATION_FIGURE).is_file()
    for key in ("prdc", "ms_ssim"):
        assert "error" not in record[key], record[key]
    assert "prdc_radiomics" not in record  # no FRD, no radiomic features: not measured, not an error
    # the console line says each question's numbers and the memorisation verdict
    said = result.stdout + result.stderr
    assert "fidelity: precision" in said and "diversity: recall" in said
    assert "MS-SSIM generated/real" in said and "memorisation: not memorised" in said
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["prdc"] == record["prdc"] and line["memorisation"]["memorised"] is False


def test_a_stopped_measurement_goes_on_to_the_same_values(prepared120, tmp_path):
    copycat = Copycat(np.asarray(prepared120.images))
    settings = EvalSection(**{**EVAL, "frd": False, "n_generated": 30, "frd_n": 30})
    whole = measure(copycat, 8, prepared120, settings, torch.device("cpu"))
    log = RepeatLog(tmp_path / "progress.json")

    def stop_once_the_first_repeat_is_kept():
        if log.get(0) is not None and "memorised_pixels" in log.get(0):
            raise JobInterrupted("stop", 15)

    with pytest.raises(JobInterrupted):
        measure(
            copycat,
            8,
            prepared120,
            settings,
            torch.device("cpu"),
            poll=stop_once_the_first_repeat_is_kept,
            progress=log,
        )
    kept = RepeatLog(tmp_path / "progress.json")
    assert kept.get(0) is not None and kept.get(1) is None
    resumed = measure(copycat, 8, prepared120, settings, torch.device("cpu"), progress=kept)
    assert resumed["repeats"] == whole["repeats"]
    for key in ("prdc", "ms_ssim", "memorisation"):
        assert resumed[key] == whole[key], key


def test_the_console_line_labels_memorisation_and_collapse():
    record = Measurement.parse(
        {
            "fid_mean": 1.0, "fid_std": 0.0, "repeats": [], "n_generated": 10, "n_real": 10, "dims": 64,
            "normalize": "fixed", "standard_weights": False,
            "prdc": {"k": 5, "network": "inception", "dims": 64, "precision": {"mean": 0.9}, "recall": {"mean": 0.1},
                     "density": {"mean": 1.0}, "coverage": {"mean": 0.2}},
            "ms_ssim": {"ratio": {"mean": 3.0}, "generated": {"mean": 0.9}, "real": {"mean": 0.3}, "pairs": 5,
                        "n_generated": 10},
            "memorisation": {"memorised": True, "quantile": 0.01,
                             "spaces": {"pixels": {"memorised": True, "fraction": {"mean": 0.5}},
                                        "inception": {"memorised": False}}},
            "ladder": {"recall": {"passes": False}},
        }
    )  # fmt: skip
    line = beyond_fid_line(record)
    assert "recall 0.100 [fails the validity ladder]" in line and "precision 0.900 " in line
    assert "MEMORISED in pixels" in line and "0.500 of images in pixels" in line
    assert "MS-SSIM generated/real 3.000" in line
    # the feature network's space named as measured, whichever network
    radimagenet = record.model_copy(update={"features": "radimagenet"})
    radimagenet.memorisation["spaces"]["inception"]["memorised"] = True
    assert "MEMORISED in pixels, radimagenet (pixels, radimagenet;" in beyond_fid_line(radimagenet)


def test_settings_no_measurement_can_use_are_refused_before_training(tmp_path, prepared120):
    # k nearest neighbours in a set of no more than k images; a quantile no run could ever be flagged at
    spec = write_spec(tmp_path, "fd_bad_k", "gan", prepared120.path, eval={**EVAL, "prdc_k": 60}, epochs=1)
    one_line_error(cli("validate", str(spec)), "fd_bad_k.toml: eval.prdc_k", "k = 60")
    # the default k on a set too small for it is no mistake of the spec: PRDC recorded unmeasurable, with why
    small = _measure(Noise(), prepared120, n_generated=4, repeats=1, frd=False, kid=False, ms_ssim=False)
    assert small["prdc"] == {
        "error": "PRDC (inception): 4 generated samples, but k = 5 nearest neighbours need at least 6"
    }
    assert "memorisation" in small and "fid_mean" in small
    spec = write_spec(tmp_path, "fd_bad_q", "gan", prepared120.path, eval={**EVAL, "memorisation_quantile": 0.5})
    one_line_error(cli("validate", str(spec)), "fd_bad_q.toml", "eval.memorisation_quantile")


def test_radimagenet_features_run_through_the_driver_and_a_wrong_file_is_refused_before_training(prepared120, tmp_path):
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    weights = tmp_path / "radimagenet_untrained.pt"
    torch.save(state, weights)
    settings = EvalSection(**{
        **EVAL, "features": "radimagenet", "weights": str(weights), "dims": 2048, "frd": False, "ms_ssim": False,
        "memorisation": False, "repeats": 1, "n_generated": 30, "kid": False, "n_real": 40,
    })  # fmt: skip
    result = measure(Noise(), 8, prepared120, settings, torch.device("cpu"), save_images=tmp_path / "images")
    assert result["weights"]["network"] == "radimagenet_resnet50" and len(result["weights"]["sha256"]) == 64
    assert (result["weights"]["kind"], result["weights"]["standard"], result["features"]) == (
        "radimagenet",
        False,
        "radimagenet",
    )
    # the saved images' README says no reference tool recomputes a number in this space
    assert "RadImageNet ResNet-50's space" in (tmp_path / "images" / "README.txt").read_text()
    record = Measurement.parse(result)
    assert "RadImageNet ResNet-50's feature space: not comparable" in summary_line(record)
    assert result["prdc"]["network"] == "radimagenet" and result["prdc"]["dims"] == 2048 and result["dims"] == 2048
    assert any("RadImageNet" in w and "not comparable" in w for w in result["warnings"])

    # a file whose layers are not ResNet-50's: refused when the job is checked, before any training
    torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "wrong.pt")
    spec = write_spec(
        tmp_path, "fd_radimagenet", "gan", prepared120.path,
        eval={**EVAL, "features": "radimagenet", "dims": 2048, "weights": str(tmp_path / "wrong.pt")},
        epochs=1, device="cpu",
    )  # fmt: skip
    result = cli("run", str(spec))
    assert result.returncode == 2
    one_line_error(result, "fd_radimagenet.toml: eval.weights", "wrong.pt")
    assert not (tmp_path / "artifacts" / "fd_radimagenet").exists() or not list(
        (tmp_path / "artifacts" / "fd_radimagenet").rglob("generator.pt")
    )
    # and "standard" is no RadImageNet file: the spec says where to get one
    spec.write_text(spec.read_text().replace(str(tmp_path / "wrong.pt"), "standard"))
    result = cli("validate", str(spec))
    assert result.returncode == 2 and "eval.weights" in result.stderr and "RadImageNet" in result.stderr
