"""The validity ladder: each rung is the degradation it says, each question's verdict follows its rule,
`heartjobs ladder` measures every registry number on a real prepared set, and its verdicts, per number,
reach later measurements."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from heartjobs import atomic
from heartjobs.data.phantom import PhantomParams, generate
from heartjobs.data.prepare import PrepareParams, prepare
from heartjobs.evaluation import verdicts
from heartjobs.evaluation.ladder import (
    METRICS,
    QUESTION_RUNGS,
    RUNGS,
    available_metrics,
    build_sets,
    clusters,
    judge,
    memorisation_verdict,
    parse_metrics,
    verdict,
)
from heartjobs.evaluation.metrics import METRICS as REGISTRY
from heartjobs.evaluation.metrics import numbers
from heartjobs.evaluation.records import FAILS_LADDER, summary_line
from heartjobs.records import Measurement
from heartjobs.store.prepared import PreparedSet

from .conftest import cli, one_line_error


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
    # memorised: the training (reference) slices themselves, every one, in another order
    memorised = sets["memorised"]
    assert sorted(i.tobytes() for i in memorised) == sorted(i.tobytes() for i in reference)
    assert not np.array_equal(memorised, reference)


def test_half_the_modes_keeps_whole_clusters_of_the_held_out_images(prepared48):
    _, sets = build_sets(PreparedSet.open(prepared48), 24, seed=0)
    held_out, half = sets["held_out"], sets["half_modes"]
    # the same clustering the rung made: k-means on its own stream, (seed + 1, 2)
    labels = clusters(held_out, np.random.default_rng([1, 2]))
    ids, sizes = np.unique(labels, return_counts=True)
    assert len(ids) == 8  # 24 images: k = 8
    index = {image.tobytes(): i for i, image in enumerate(held_out)}
    used = {index[image.tobytes()] for image in half}  # every image is a held-out one
    kept = {int(c) for c in np.unique(labels[sorted(used)])}
    # whole clusters: every image of a kept cluster is used, none of the others; every second by size
    assert used == set(np.flatnonzero(np.isin(labels, sorted(kept))))
    assert kept == {int(c) for c in ids[np.lexsort((ids, -sizes))][::2]}
    # about half the images, each repeated in turn to n: fewer distinct images than held-out, more than mode collapse
    assert 4 < len(used) < 24 and len(half) == 24
    counts = np.unique([index[image.tobytes()] for image in half], return_counts=True)[1]
    assert counts.max() - counts.min() <= 1


def test_the_added_rungs_change_no_older_rung(prepared48):
    # memorised and half_modes draw from their own streams: the degradations are those of a ladder without them
    _, sets = build_sets(PreparedSet.open(prepared48), 20, seed=0)
    rng = np.random.default_rng(1)  # the degradations' shared stream, seed + 1
    older = {r.name: r.make(sets["held_out"], rng) for r in RUNGS if r.stream == 0}
    assert all(np.array_equal(older[name], sets[name]) for name in older)


def test_the_verdict_follows_the_rule():
    good = {"held_out": 1.0, "blur_mild": 2.0, "blur_strong": 5.0, "noise_low": 1.5, "noise_high": 3.0}
    good |= {"window_shift": 2.5, "mode_collapse": 1.2, "shuffled_patches": 4.0, "uniform_noise": 9.0}
    good |= {"memorised": 0.0, "half_modes": 0.9}  # not judged for the overall question: anything goes
    # ranks by position 1 4 8 3 6 5 2 7 9: sum d^2 = 58, rho = 1 - 6 * 58 / (9 * 80); reported, not required
    rho = pytest.approx(1 - 6 * 58 / 720)
    expected = {"question": "overall", "better": "lower", "passes": True, "failures": [], "spearman": rho}
    assert verdict(good) == expected
    # a degraded set scored as good as the real images, and strong blur better than mild
    bad = good | {"noise_low": 0.5, "blur_strong": 1.8}
    result = verdict(bad)
    assert result["passes"] is False
    assert result["failures"] == [
        "noise_low (0.5) not worse than held-out real (1)",
        "blur_strong (1.8) not worse than blur_mild (2)",
    ]
    # higher is better (precision): the same rule, turned; mode collapse is no fidelity loss, a tie fails
    precision = {name: 1.0 - value / 10 for name, value in bad.items()} | {"mode_collapse": 1.0}
    result = verdict(precision, "fidelity", "higher")
    assert result["failures"] == [
        "noise_low (0.95) not worse than held-out real (0.9)",
        "blur_strong (0.82) not worse than blur_mild (0.8)",
    ]
    saturated = verdict(precision | {"noise_low": 0.0, "noise_high": 0.0, "blur_strong": 0.0}, "fidelity", "higher")
    assert saturated["failures"] == ["noise_high (0) not worse than noise_low (0) (tied)"]
    assert QUESTION_RUNGS["fidelity"] == tuple(n for n in QUESTION_RUNGS["overall"] if n != "mode_collapse")


def test_diversity_ranks_half_the_modes_then_mode_collapse_and_memorisation_flags_only_the_copies():
    recall = {"held_out": 0.9, "half_modes": 0.6, "mode_collapse": 0.1, "uniform_noise": 0.0}
    assert verdict(recall, "diversity", "higher") == {
        "question": "diversity", "better": "higher", "passes": True, "failures": [], "spearman": 1.0,
    }  # fmt: skip
    result = verdict(recall | {"half_modes": 0.05}, "diversity", "higher")
    assert result["failures"] == ["mode_collapse (0.1) not worse than half_modes (0.05)"]
    assert result["spearman"] == pytest.approx(0.5)
    # MS-SSIM ratio: lower is better (a collapsed set is self-similar)
    ratio = {"held_out": 1.0, "half_modes": 1.3, "mode_collapse": 0.9}
    assert verdict(ratio, "diversity", "lower")["failures"] == ["mode_collapse (0.9) not worse than half_modes (1.3)"]
    fractions = {r.name: 0.0 for r in RUNGS} | {"memorised": 1.0, "mode_collapse": 0.25}
    flags = {name: value > 0.05 for name, value in fractions.items()}
    assert memorisation_verdict(fractions, flags)["failures"] == ["mode_collapse flagged (0.25 below threshold)"]
    flags |= {"memorised": False, "mode_collapse": False}
    assert memorisation_verdict(fractions, flags) == {
        "question": "memorisation", "better": "lower", "passes": False,
        "failures": ["memorised not flagged (1 below threshold)"], "spearman": None,
    }  # fmt: skip
    # judge: the number's question from the registry, the flag beside the value
    rungs = {name: {"memorised_pixels": v, "memorised_pixels_flag": v == 1.0} for name, v in fractions.items()}
    assert judge(numbers()["memorised_pixels"][1], rungs)["passes"] is True


def test_metrics_are_parsed_with_a_one_line_error():
    assert parse_metrics("frd, fid,memorisation_pixels") == ("frd", "fid", "memorisation_pixels")
    with pytest.raises(Exception, match="--metrics: is: choose from fid,kid,frd,prdc,prdc_radiomics,ms_ssim,"):
        parse_metrics("fid,is")
    # the default: every registry metric (frd-score and pyradiomics are installed here)
    assert parse_metrics(None) == available_metrics() == METRICS == tuple(REGISTRY)


def test_verdicts_are_looked_up_by_set_number_and_feature_space():
    def said(passes: bool, question: str, metric: str) -> dict:
        return {"metric": metric, "question": question, "passes": passes, "failures": [] if passes else ["x"],
                "spearman": 0.2}  # fmt: skip

    ladder = {
        "content_hash": "c1",
        "n": 30,
        "verdicts": {
            "fid": said(False, "overall", "fid"),
            "frd": said(True, "overall", "frd"),
            "recall": said(True, "diversity", "prdc"),
            "recall_radiomics": said(False, "diversity", "prdc_radiomics"),
            "ms_ssim_ratio": said(True, "diversity", "ms_ssim"),
        },
        "protocol": {
            "fid": {"weights": {"sha256": "w1"}, "dims": 64},
            "prdc": {"weights": {"sha256": "w1"}, "dims": 64, "k": 5},
            "frd": {"version": "v1"},
            "prdc_radiomics": {"version": "v1", "k": 5},
            "ms_ssim": {"scales": 3},
        },
    }
    verdicts.remember(ladder)
    space = {"weights_sha256": "w1", "dims": 64, "frd_version": "v1"}
    assert verdicts.lookup("c1", "fid", weights_sha256="w1", dims=64)["passes"] is False
    assert verdicts.lookup("c1", "fid", weights_sha256="w1", dims=192) is None  # another feature space
    assert verdicts.lookup("c2", "fid", weights_sha256="w1", dims=64) is None  # another set
    assert verdicts.lookup("c1", "frd", frd_version="v1")["passes"] is True
    # each number in its own space: the feature network's, the radiomic one, the pixels (the data alone)
    assert verdicts.lookup("c1", "recall", **space) | {"ladder": None} == {
        "question": "diversity", "passes": True, "failures": [], "spearman": 0.2, "n": 30, "ladder": None,
    }  # fmt: skip
    assert verdicts.lookup("c1", "recall", **space | {"dims": 2048}) is None
    assert verdicts.lookup("c1", "recall_radiomics", **space | {"dims": 2048})["passes"] is False
    assert verdicts.lookup("c1", "recall_radiomics", **space | {"frd_version": "v2"}) is None
    assert verdicts.lookup("c1", "ms_ssim_ratio", weights_sha256=None, dims=None, frd_version=None)["passes"]
    assert verdicts.lookup("c1", "coverage", **space) is None  # never laddered
    # the newest verdict wins
    ladder["verdicts"]["fid"] = said(True, "overall", "fid")
    verdicts.remember(ladder)
    assert verdicts.lookup("c1", "fid", weights_sha256="w1", dims=64)["passes"] is True


def test_a_verdict_line_from_before_the_numbers_still_reads():
    # a ladder.json of FID, KID and FRD only (no "metric" nor "question" in its verdicts), and its line
    old = {"passes": False, "failures": ["noise_low not worse"], "spearman": 0.1}
    protocol = {"kid": {"weights": {"sha256": "w"}, "dims": 64}}
    verdicts.remember({"content_hash": "c3", "n": 50, "verdicts": {"kid": old}, "protocol": protocol})
    line = {"content_hash": "c3", "metric": "frd", "frd_version": "v1", "passes": True, "failures": [], "spearman": 0.3,
            "n": 50, "ladder": None}  # fmt: skip
    atomic.append_lines(verdicts.verdicts_file(), [atomic.dumps_json(line)])
    assert verdicts.lookup("c3", "kid", weights_sha256="w", dims=64)["passes"] is False
    assert verdicts.lookup("c3", "frd", frd_version="v1") == {
        "question": "overall", "passes": True, "failures": [], "spearman": 0.3, "n": 50, "ladder": None,
    }  # fmt: skip


@pytest.mark.slow
def test_ladder_cli_scores_every_number_on_its_question_and_its_verdicts_reach_later_measurements(tmp_path, prepared48):
    out = tmp_path / "ladder"
    # every registry metric, the default
    result = cli("ladder", prepared48, "--weights", "untrained", "--dims", "64", "--n", "24", "--out", out)
    assert result.returncode == 0, result.stderr
    ladder = json.loads((out / "ladder.json").read_text())
    assert [r["name"] for r in ladder["rungs"]] == [r.name for r in RUNGS] and ladder["n"] == 24
    assert ladder["metrics"] == list(REGISTRY) and set(ladder["verdicts"]) == set(numbers())
    rungs = {r["name"]: r for r in ladder["rungs"]}
    for key, (metric, number) in numbers().items():
        assert ladder["verdicts"][key] == {"metric": metric.name, **judge(number, rungs)}
        assert ladder["verdicts"][key]["question"] == number.question
    for name, rung in rungs.items():
        finite = {k: v for k, v in rung.items() if k in numbers() and v is not None}
        # FRD of the reference against itself: unmeasurable (said), null in ladder.json; every other value finite
        assert set(finite) == set(numbers()) - ({"frd"} if name == "memorised" else set()), name
        assert all(np.isfinite(v) for v in finite.values()), rung
    assert ladder["unmeasurable"] and ladder["unmeasurable"][0].startswith("frd on memorised: FRD unmeasurable")
    verdict_of = {key: v["passes"] for key, v in ladder["verdicts"].items()}
    # FRD on this phantom: every degradation scores worse than held-out real images, stronger worse
    assert verdict_of["frd"], ladder["verdicts"]["frd"]
    # diversity: recall and coverage in both spaces, and MS-SSIM, rank half the modes below the held-out
    # images and mode collapse below half the modes
    diversity = ["recall", "coverage", "recall_radiomics", "coverage_radiomics", "ms_ssim_ratio"]
    assert all(verdict_of[key] for key in diversity), {key: ladder["verdicts"][key] for key in diversity}
    # memorisation, in all three spaces: the training slices flagged, nothing else (not noise, not real images)
    for key in ("memorised_pixels", "memorised_inception", "memorised_radiomics"):
        assert [name for name, rung in rungs.items() if rung[f"{key}_flag"]] == ["memorised"], key
        assert verdict_of[key] and rungs["memorised"][key] == 1.0
    # fidelity: every degradation scores below the held-out images in both spaces; what fails here is a tie
    # at 0 (no blurred image inside the real manifold, mild or strong): saturated, not reversed
    for key in ("precision", "density", "precision_radiomics", "density_radiomics"):
        assert all(rungs[name][key] < rungs["held_out"][key] for name in QUESTION_RUNGS["fidelity"][1:]), key
        assert all(failure.endswith("(tied)") for failure in ladder["verdicts"][key]["failures"]), key
    assert ladder["protocol"]["fid"]["weights"]["kind"] == "untrained" and ladder["protocol"]["fid"]["dims"] == 64
    assert ladder["protocol"]["prdc"]["k"] == 5 and ladder["protocol"]["ms_ssim"]["scales"] == 3
    assert ladder["protocol"]["memorisation_pixels"]["baseline"] == "held-out slices"
    for question in ("overall", "fidelity", "diversity", "memorisation"):
        assert f"; {question}: " in result.stdout
    assert "spearman rho" in result.stdout and "verdict" in result.stdout and "1 flagged" in result.stdout
    assert any("FRD's covariance is singular" in w for w in ladder["warnings"])  # 24 images: said, not hidden
    with Image.open(out / "ladder.png") as figure:
        assert figure.format == "PNG" and figure.width > 300
    # a measurement on the same set and feature spaces now carries these verdicts, per number
    space = {"weights_sha256": ladder["protocol"]["fid"]["weights"]["sha256"], "dims": 64, "frd_version": "v1"}
    for key, said in ladder["verdicts"].items():
        found = verdicts.lookup(ladder["content_hash"], key, **space)
        assert (found["passes"], found["question"]) == (said["passes"], said["question"]), key
        assert found["ladder"] == str((out / "ladder.json").resolve())
    assert verdicts.lookup(ladder["content_hash"], "recall", **space | {"dims": 192}) is None
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


@pytest.mark.slow  # ResNet-50 at 224 px on 12 sets: ~20-50 s on 2 CPU cores
def test_the_ladder_judges_radimagenets_space_from_a_users_file(tmp_path, prepared48):
    # an untrained network of RadImageNet's architecture (the weights cannot be downloaded here)
    from torchvision.models import resnet50

    weights = tmp_path / "radimagenet_untrained.pt"
    torch.save({k: v for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}, weights)
    out = tmp_path / "ladder"
    args = ["--features", "radimagenet", "--weights", weights, "--metrics", "kid,prdc", "--n", "6", "--out", out]
    result = cli("ladder", prepared48, *args)
    assert result.returncode == 0, result.stderr
    ladder = json.loads((out / "ladder.json").read_text())
    protocol = ladder["protocol"]["prdc"]
    assert (ladder["features"], protocol["network"], protocol["dims"]) == ("radimagenet", "radimagenet", 2048)
    assert protocol["weights"]["network"] == "radimagenet_resnet50" and "RadImageNet ResNet-50" in result.stdout
    # remembered in that space: the file's sha256 and 2048 dims, not Inception's
    space = {"weights_sha256": protocol["weights"]["sha256"], "dims": 2048}
    assert verdicts.lookup(ladder["content_hash"], "recall", **space)["question"] == "diversity"
    # (KID, not FID: a 2048-d Fréchet distance per rung would cost this test 30 s)
    assert verdicts.lookup(ladder["content_hash"], "kid", **space)["passes"] == ladder["verdicts"]["kid"]["passes"]
    # a file whose layers do not fit the architecture: one line, before anything is measured
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    refused = cli("ladder", prepared48, "--features", "radimagenet", "--weights", wrong, "--metrics", "fid")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "wrong.pt" in refused.stderr
    # no file at all, or Inception's dims with RadImageNet: one line each, as `evaluate` says it
    one_line_error(cli("ladder", prepared48, "--features", "radimagenet"), "weights", "RadImageNet")
    one_line_error(cli("ladder", prepared48, "--features", "radimagenet", "--weights", weights, "--dims", "64"), "dims")
