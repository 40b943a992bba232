"""The validity ladder: each rung is the degradation it says, the verdict follows its rule, `heartjobs
ladder` measures real metrics on a real prepared set, and its verdicts reach later measurements."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.evaluation import verdicts
from heartjobs.evaluation.ladder import RUNGS, build_sets, parse_metrics, verdict
from heartjobs.evaluation.records import FAILS_LADDER, summary_line
from heartjobs.records import Measurement
from heartjobs.store.prepared import PreparedSet

from .conftest import cli


@pytest.fixture(scope="module")
def prepared48(tmp_path_factory):
    """48 phantom slices at 64 px: two halves of 24."""
    folder = tmp_path_factory.mktemp("ladder_data")
    generate(folder / "phantom", PhantomParams(slices=48, size=128, seed=3))
    prepare(folder / "phantom", folder / "prepared", PrepareParams(size=64))
    return folder / "prepared"


def _gradient_energy(images: np.ndarray) -> float:
    return float(np.mean(np.abs(np.diff(images.astype(float), axis=-1))))


def test_each_rung_is_the_degradation_it_names(prepared48):
    reference, sets = build_sets(PreparedSet.open(prepared48), 20, seed=0)
    assert list(sets) == [r.name for r in RUNGS] and reference.shape == (20, 64, 64)
    held_out = sets["held_out"]
    # disjoint halves: no held-out image is a reference image
    assert not any((held_out[i] == reference).all(axis=(1, 2)).any() for i in range(20))
    edges = {name: _gradient_energy(images) for name, images in sets.items()}
    assert edges["held_out"] > edges["blur_mild"] > edges["blur_strong"]
    noise = {k: float(np.std(sets[k].astype(float) - held_out)) for k in ("noise_low", "noise_high")}
    assert 5 < noise["noise_low"] < 9 < 20 < noise["noise_high"] < 33  # std 8 and 32, less where clipped
    shift = sets["window_shift"].astype(float) - held_out
    assert shift.max() == 51 and (shift[held_out < 204] == 51).all()  # brighter, clipped at the top
    assert len({image.tobytes() for image in sets["mode_collapse"]}) == 4
    # shuffled patches: the same pixels per image, in other places
    patches = sets["shuffled_patches"]
    assert all(np.array_equal(np.sort(p.ravel()), np.sort(h.ravel())) for p, h in zip(patches, held_out, strict=True))
    assert not np.array_equal(patches, held_out)
    uniform = sets["uniform_noise"]
    assert uniform.min() < 5 and uniform.max() > 250 and abs(float(uniform.mean()) - 127.5) < 3


def test_the_verdict_follows_the_rule():
    good = {"held_out": 1.0, "blur_mild": 2.0, "blur_strong": 5.0, "noise_low": 1.5, "noise_high": 3.0}
    good |= {"window_shift": 2.5, "mode_collapse": 1.2, "shuffled_patches": 4.0, "uniform_noise": 9.0}
    # ranks by position 1 4 8 3 6 5 2 7 9: sum d^2 = 58, rho = 1 - 6 * 58 / (9 * 80); reported, not required
    assert verdict(good) == {"passes": True, "failures": [], "spearman": pytest.approx(1 - 6 * 58 / 720)}
    # a degraded set scored as good as the real images, and strong blur better than mild
    bad = good | {"noise_low": 0.5, "blur_strong": 1.8}
    result = verdict(bad)
    assert result["passes"] is False
    assert result["failures"] == [
        "noise_low (0.5) not worse than held-out real (1)",
        "blur_strong (1.8) not worse than blur_mild (2)",
    ]


def test_metrics_are_parsed_with_a_one_line_error():
    assert parse_metrics("frd, fid") == ("frd", "fid")
    with pytest.raises(Exception, match="--metrics: is: choose from fid,kid,frd"):
        parse_metrics("fid,is")


def test_verdicts_are_looked_up_by_set_metric_and_feature_space():
    ladder = {
        "content_hash": "c1",
        "n": 30,
        "verdicts": {
            "fid": {"passes": False, "failures": ["x"], "spearman": 0.2},
            "frd": {"passes": True, "failures": [], "spearman": 0.1},
        },
        "protocol": {"fid": {"weights": {"sha256": "w1"}, "dims": 64}, "frd": {"version": "v1"}},
    }
    verdicts.remember(ladder)
    assert verdicts.lookup("c1", "fid", weights_sha256="w1", dims=64)["passes"] is False
    assert verdicts.lookup("c1", "fid", weights_sha256="w1", dims=192) is None  # another feature space
    assert verdicts.lookup("c2", "fid", weights_sha256="w1", dims=64) is None  # another set
    assert verdicts.lookup("c1", "frd", frd_version="v1")["passes"] is True
    # the newest verdict wins
    ladder["verdicts"]["fid"] = {"passes": True, "failures": [], "spearman": 0.9}
    verdicts.remember(ladder)
    assert verdicts.lookup("c1", "fid", weights_sha256="w1", dims=64)["passes"] is True


@pytest.mark.slow
def test_ladder_cli_measures_every_rung_and_its_verdicts_reach_later_measurements(tmp_path, prepared48):
    out = tmp_path / "ladder"
    args = ["--metrics", "fid,kid,frd", "--weights", "untrained", "--dims", "64", "--n", "24", "--out", out]
    result = cli("ladder", prepared48, *args)
    assert result.returncode == 0, result.stderr
    ladder = json.loads((out / "ladder.json").read_text())
    assert [r["name"] for r in ladder["rungs"]] == [r.name for r in RUNGS] and ladder["n"] == 24
    for rung in ladder["rungs"]:
        assert all(np.isfinite(rung[m]) for m in ("fid", "kid", "frd")), rung
    for metric in ("fid", "kid", "frd"):
        values = {r["name"]: r[metric] for r in ladder["rungs"]}
        assert ladder["verdicts"][metric] == verdict(values)
    # FRD on this phantom: every degradation scores worse than held-out real images, stronger worse
    assert ladder["verdicts"]["frd"]["passes"], ladder["verdicts"]["frd"]
    assert ladder["protocol"]["fid"]["weights"]["kind"] == "untrained" and ladder["protocol"]["fid"]["dims"] == 64
    assert "spearman rho" in result.stdout and "verdict" in result.stdout
    assert any("FRD's covariance is singular" in w for w in ladder["warnings"])  # 24 images: said, not hidden
    with Image.open(out / "ladder.png") as figure:
        assert figure.format == "PNG" and figure.width > 300
    # a measurement on the same set and feature space now carries these verdicts
    space = {"weights_sha256": ladder["protocol"]["fid"]["weights"]["sha256"], "dims": 64, "frd_version": "v1"}
    for metric in ("fid", "kid", "frd"):
        found = verdicts.lookup(ladder["content_hash"], metric, **space)
        assert found["passes"] == ladder["verdicts"][metric]["passes"]
        assert found["ladder"] == str((out / "ladder.json").resolve())
    record = Measurement(
        fid_mean=1.0, fid_std=0.0, n_generated=10, repeats=[{}], n_real=48, dims=64, normalize="fixed",
        standard_weights=False, weights={"kind": "untrained"},
        ladder={"fid": {"passes": False}, "frd": {"passes": True}},
    )  # fmt: skip
    assert f"FID 1.000 +- 0.000 [{FAILS_LADDER}]" in summary_line(record)


def test_ladder_refuses_an_unusable_out_folder_before_measuring(tmp_path, prepared48):
    taken = tmp_path / "a_file"
    taken.write_text("not a folder")
    result = cli("ladder", prepared48, "--metrics", "frd", "--out", taken)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--out {taken}: cannot make the folder" in result.stderr and "radiomic" not in result.stderr
