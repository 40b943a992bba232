"""The study's report: one row per job from its newest run folder, set beside the thesis' Table 1, written
as summary.md/.csv/.json plus figures and report.html, and printed by `heartjobs report`; runs over seeds as
configurations with their statistics; report.html opened in headless Chromium. The run folders are built
by hand (resolved spec, status, losses, fid.json, sample grids) from real resolved specs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heartjobs.records import Measurement
from heartjobs.report import configurations
from heartjobs.report.summary import COLUMNS, ROW_KEYS, Summary, collect, differences, label, markdown, write_report
from heartjobs.spec.loading import load_spec

from .conftest import cli, write_spec

# and a loss figure per model
FIGURES = ("report_overview.png", "report_best_grids.png", "report_fid_vs_hyperparameters.png")


@pytest.fixture
def specs(tmp_path, prepared32):
    """Job name, model and [train] values -> the resolved spec record a run folder keeps in resolved.json
    (its spec file is left in tmp_path/jobs)."""
    folder = tmp_path / "jobs"
    folder.mkdir()

    def resolved(name: str, model: str, architecture: str = "", **train) -> dict:
        train.setdefault("tf32", "convolutions")  # the thesis' precision, as jobs/thesis.sweep.toml sets it
        path = write_spec(folder, name, model, prepared32, **train)
        if architecture:
            path.write_text(path.read_text() + f"[architecture]\n{architecture}\n")
        spec = load_spec(path)
        record = {"spec_hash": spec.spec_hash, "spec": spec.model_dump(mode="json")}
        record["spec"]["data"]["count"] = 3307  # recorded as if trained on the thesis' set
        return record

    return resolved


def _png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), shade, dtype=np.uint8), mode="L").save(path)


def _fid_report(run: Path, record: dict, fids: list[float], epochs: int, **protocol) -> Measurement:
    """fid.json as heartjobs writes it (its record, heartjobs.records.Measurement): the measurement
    (evaluation.driver.measure) with what it measured, by default under the thesis' protocol (`protocol`
    overrides its values); FRD is 5 + FID / 100."""
    kids = [0.2 + f / 10_000 for f in fids]
    frds = [5 + f / 100 for f in fids]
    values = {
        "metric": "fid",
        "run": str(run),
        "job": record["spec"]["name"],
        "spec_hash": record["spec_hash"],
        "snapshot": {"file": "generator.pt", "epoch": epochs},
        "fid_mean": float(np.mean(fids)),
        "fid_std": float(np.std(fids)),
        "repeats": [
            {"repeat": r, "seed": r, "fid": fid, "kid": kid, "kid_subset_std": 0.01, "frd": frd}
            for r, (fid, kid, frd) in enumerate(zip(fids, kids, frds, strict=True))
        ],
        "n_generated": 3000,
        "n_real": record["spec"]["data"]["count"],  # the whole prepared set
        "dims": 2048,
        "normalize": "per_image_minmax",
        "batch_size": 100,
        "weights": {"kind": "standard", "path": "/cache/pt_inception.pth", "sha256": "6726825d0af5", "standard": True},
        "standard_weights": True,
        "real_statistics": {"file": "/cache/real_stats.npz", "from_cache": True},
        "device": "cpu",
        "versions": {"heartjobs": "0.1.0", "torch": "2.14.1", "pytorch_fid": "0.3.0"},
        "warnings": [],
        "kid_mean": float(np.mean(kids)),
        "kid_std": float(np.std(kids)),
        "frd": {"mean": float(np.mean(frds)), "std": float(np.std(frds)), "version": "v1", "n_generated": 1000},
        "seconds": 41.5,
        "time": "2026-01-02T03:04:05+00:00",
    }
    return Measurement(**values | protocol)


def _run(
    artifacts: Path,
    record: dict,
    *,
    version: int = 1,
    state: str = "done",
    fids: list[float] | None = None,
    **protocol,
) -> Path:
    """A run folder artifacts/<job>/vNNNN of two epochs; measured (fid.json) when `fids` are given."""
    run = artifacts / record["spec"]["name"] / f"v{version:04d}"
    run.mkdir(parents=True)
    (run / "resolved.json").write_text(json.dumps(record))
    status = {
        "state": state,
        "started": "2026-01-02T03:00:00+00:00",
        "ended": "2026-01-02T03:04:00+00:00",
        "heartbeat": "2026-01-02T03:04:00+00:00",
        "epochs_done": 2 if state == "done" else 1,
        "epochs_total": record["spec"]["train"]["epochs"],
        "error": None if state == "done" else "RuntimeError: CUDA error: an illegal memory access",
        "resumed": 0,
    }
    (run / "status.json").write_text(json.dumps(status))
    epochs = [
        {"epoch": 1, "d_loss": 0.69, "g_loss": 0.71, "seconds": 1.25, "images_per_s": 100.0},
        {"epoch": 2, "d_loss": 0.52, "g_loss": 1.13, "seconds": 0.75, "images_per_s": 120.0},
    ]
    (run / "losses.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs[: status["epochs_done"]]))
    _png(run / "samples" / "epoch_0002.png", 90)
    _png(run / "real.png", 200)
    if fids is not None:
        _fid_report(run, record, fids, 2, **protocol).write(run / "fid.json")
    return run


def one_question(
    *,
    precision: float = 0.7,
    density: float = 0.9,
    recall: float = 0.6,
    coverage: float = 0.8,
    radiomic: tuple[float, float, float, float] | None = (0.65, 0.85, 0.5, 0.75),
    ratio: float = 1.05,
    memorised: tuple[str, ...] = (),
    pixels: float = 0.001,
    figure: str | None = None,
    ladder: dict | None = None,
) -> dict:
    """The fields issue 31 adds to fid.json, in the metric driver's format (means over repeats with their
    std, each with its protocol): PRDC in the feature network's space and (`radiomic`: precision, density,
    recall, coverage; None: not measured) in the radiomic space, the MS-SSIM ratio, memorisation in pixels and
    Inception features (the spaces in `memorised` flagged), and a ladder keyed per number."""

    def spread(value: float) -> dict:
        return {"mean": value, "std": 0.01}

    spaces = {
        space: {
            "fraction": spread(0.9 if space in memorised else pixels if space == "pixels" else 0.0),
            "memorised": space in memorised,
            "threshold": 12.5,
            "baseline": "leave-one-out training slices",
            "n_generated": 3000,
            "n_training": 3307,
            "rule": "memorised when more than 5 x the quantile, and at least 5 images, lie below the threshold",
            "pairs": [{"generated": 3, "training": 7, "distance": 0.0}],
        }
        for space in ("pixels", "inception")
    }
    values = {"precision": precision, "density": density, "recall": recall, "coverage": coverage}
    fields = {
        "prdc": {
            "k": 5,
            "space": "inception",
            "network": "inception",
            "dims": 2048,
            "n_real": 3307,
            "n_generated": 3000,
            **{key: spread(value) for key, value in values.items()},
        },  # fmt: skip
        "ms_ssim": {
            "ratio": spread(ratio),
            "generated": spread(0.3 * ratio),
            "real": spread(0.3),
            "pairs": 1000,
            "n_generated": 1000,
            "n_real": 3307,
            "protocol": {"scales": 3, "window": 7},
        },  # fmt: skip
        "memorisation": {"memorised": bool(memorised), "quantile": 0.01, "spaces": spaces}
        | ({"figure": figure} if figure else {}),
    }
    if radiomic is not None:
        fields["prdc_radiomics"] = {
            "k": 5,
            "space": "radiomics",
            "dims": 91,
            "n_real": 1000,
            "n_generated": 1000,
            "n_real_used": 1000,
            "n_generated_used": 998,
            "features_used": 91,
            "normalisation": "z-score on the real set (FRD v1)",
            **{key: spread(value) for key, value in zip(values, radiomic, strict=True)},
        }  # fmt: skip
    if ladder is not None:
        fields["ladder"] = ladder
    return fields


def _by_job(rows: list[dict]) -> dict[str, dict]:
    return {r["job"]: r for r in rows}


def test_label_names_a_configuration_the_way_the_thesis_does():
    assert label({}) == "default"
    assert label({"batch_size": 16}) == "bsize = 16"
    assert label({"latent_dim": 50}) == "ldim = 50"
    assert label({"lr": 0.0001}) == "lr = 0.0001"
    assert label({"lr": 2.5e-05}) == "lr = 0.000025"  # positional, as Table 1 writes it
    assert label({"latent_dim": 200, "batch_size": 32}) == "ldim = 200, bsize = 32"
    # the hyperparameters the thesis never varied
    assert label({"betas": [0.9, 0.999]}) == "betas = (0.9, 0.999)"
    assert label({"clip_value": 0.005, "n_critic": 10}) == "clip = 0.005, ncritic = 10"


def test_differences_are_the_training_values_off_the_models_thesis_defaults(specs):
    def train(name, model, **values):
        return specs(name, model, **values)["spec"]["train"]

    # the recorded spec as JSON: betas are a list there, the defaults a tuple; neither is a difference
    assert differences("dcgan", train("plain", "dcgan")) == {}
    assert differences("dcgan", train("lr", "dcgan", lr=0.0001)) == {"lr": 0.0001}
    assert differences("wgan", train("wgan", "wgan", lr=0.00005, latent_dim=200)) == {"latent_dim": 200}
    # how a run is bookkept and where it runs are not configuration
    assert differences("gan", train("bk", "gan", sample_every=3, keep_checkpoints=1, device="cpu")) == {}
    # nor is the training seed: runs with other seeds are the configuration's repeats
    assert differences("gan", train("short", "gan", epochs=2, seed=4)) == {"epochs": 2}
    # the same values are defaults for one model and differences for another
    assert differences("gan", {"lr": 5e-05}) == {"lr": 5e-05}
    assert differences("wgan", {"lr": 5e-05}) == {}


def test_a_run_of_a_thesis_configuration_gets_its_table1_fid(tmp_path, specs):
    record = specs("dcgan_lr0.0001", "dcgan", lr=0.0001)
    assert record["spec"]["train"]["epochs"] == 200  # the thesis' epochs, by default
    run = _run(tmp_path / "artifacts", record, fids=[230.0, 231.5, 229.0])
    [row] = collect(tmp_path / "artifacts")
    assert list(row) == ROW_KEYS
    assert row["protocol"] == "thesis"
    assert row["job"] == "dcgan_lr0.0001" and row["model"] == "dcgan" and row["state"] == "done"
    assert row["configuration"] == "lr = 0.0001"
    assert (row["thesis_fid"], row["thesis_fid_std"]) == (219.83, 0.63)
    assert row["fid_mean"] == round(np.mean([230.0, 231.5, 229.0]), 3) == 230.167
    assert row["fid_std"] == round(float(np.std([230.0, 231.5, 229.0])), 3)
    assert row["kid_mean"] == round(0.2 + np.mean([230.0, 231.5, 229.0]) / 10_000, 5)
    assert (row["standard_weights"], row["n_generated"]) == (True, 3000)
    assert (row["epochs"], row["train_seconds"], row["images_per_s"]) == (2, 2.0, 110.0)
    assert row["run_dir"] == str(run)


def test_runs_off_the_thesis_configurations_get_no_thesis_value(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("two_keys", "dcgan", lr=0.0001, batch_size=16), fids=[250.0])
    _run(artifacts, specs("more_epochs", "dcgan", lr=0.0001, epochs=50), fids=[250.0])
    _run(artifacts, specs("other_seed", "dcgan", lr=0.0001, seed=3), fids=[250.0, 251.0, 249.0])
    _run(
        artifacts, specs("wgan_ldim200", "wgan", latent_dim=200), fids=[250.0, 251.0, 249.0]
    )  # the control: it does compare
    rows = _by_job(collect(artifacts))
    assert rows["two_keys"]["configuration"] == "bsize = 16, lr = 0.0001"
    assert rows["more_epochs"]["configuration"] == "epochs = 50, lr = 0.0001"
    # the seed is no part of a configuration: Table 1's value stands beside it whatever the seed (the
    # thesis fixed none)
    assert rows["other_seed"]["configuration"] == "lr = 0.0001" and rows["other_seed"]["seed"] == 3
    assert (rows["other_seed"]["thesis_fid"], rows["other_seed"]["thesis_fid_std"]) == (219.83, 0.63)
    for job in ("two_keys", "more_epochs"):
        assert rows[job]["thesis_fid"] is None and rows[job]["thesis_fid_std"] is None, job
        assert rows[job]["fid_mean"] == 250.0, job
    assert (rows["wgan_ldim200"]["configuration"], rows["wgan_ldim200"]["thesis_fid"]) == ("ldim = 200", 253.06)


def test_an_architecture_off_the_thesis_widths_is_its_own_configuration_compared_with_the_default(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("gan_default", "gan"), fids=[250.0])
    widths = "hidden = [128, 256, 512, 1024]"
    _run(artifacts, specs("gan_thesis_widths", "gan", architecture=widths), fids=[250.0, 251.0, 249.0])
    _run(artifacts, specs("gan_deeper", "gan", architecture="hidden = [128, 256, 512, 1024, 1024]"), fids=[240.0])
    _run(artifacts, specs("dcgan_narrow", "dcgan", architecture="width = 64", lr=0.0001), fids=[260.0])
    rows = _by_job(collect(artifacts))
    # the thesis' widths written out are the default, with its Table 1 value
    assert rows["gan_thesis_widths"]["configuration"] == "default" and rows["gan_thesis_widths"]["thesis_fid"]
    assert rows["gan_thesis_widths"]["configuration_key"] == rows["gan_default"]["configuration_key"]
    deeper = rows["gan_deeper"]
    assert deeper["configuration"] == "hidden = (128, 256, 512, 1024, 1024)" and deeper["thesis_fid"] is None
    assert deeper["changes"] == {"hidden": [128, 256, 512, 1024, 1024]}
    # a configuration of its own, in the default's context (so the report compares the two)
    assert deeper["configuration_key"] != rows["gan_default"]["configuration_key"]
    assert deeper["context_key"] == rows["gan_default"]["context_key"]
    assert rows["dcgan_narrow"]["configuration"] == "lr = 0.0001, width = 64"
    assert rows["dcgan_narrow"]["thesis_fid"] is None


def test_a_job_expected_but_never_run_shows_as_missing(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("gan_default", "gan"), fids=[270.0, 272.0])
    rows = collect(artifacts, expected=["wgan_default", "gan_default"])
    assert [r["job"] for r in rows] == ["wgan_default", "gan_default"]  # the expected order
    missing = rows[0]
    assert missing["state"] == "missing"
    assert all(missing[c] is None for c in ROW_KEYS if c not in ("job", "state"))
    assert "| wgan_default | - | - | missing | - | - |" in markdown(rows)
    # an artifacts folder that isn't there yet: every expected job is missing
    assert [r["state"] for r in collect(tmp_path / "nowhere", expected=["a", "b"])] == ["missing", "missing"]


def test_a_failed_run_shows_failed_with_no_fid(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("gan_lr0.0004", "gan", lr=0.0004), state="failed")
    [row] = collect(artifacts)
    assert row["state"] == "failed" and row["configuration"] == "lr = 0.0004"
    assert row["fid_mean"] is row["fid_std"] is row["kid_mean"] is row["standard_weights"] is None
    assert row["epochs"] == 1  # how far it got
    assert row["thesis_fid"] is None and row["protocol"] == "differs: not measured"
    line = next(line for line in markdown([row]).splitlines() if "gan_lr0.0004" in line)
    assert "| failed |" + " - |" * 13 + " 1 |" in line and line.endswith("| differs: not measured | - |")


def test_the_newest_version_of_a_job_is_the_one_reported(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("dcgan_default", "dcgan"), version=1, fids=[300.0])
    newest = _run(artifacts, specs("dcgan_default", "dcgan", batch_size=16), version=2, fids=[212.0, 212.0, 212.0])
    [row] = collect(artifacts)
    assert row["run_dir"] == str(newest)
    assert row["fid_mean"] == 212.0
    assert row["configuration"] == "bsize = 16" and row["thesis_fid"] == 210.96


def test_write_report_writes_summaries_that_agree_with_the_rows(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("gan_default", "gan"), fids=[268.0, 270.0, 269.0])
    _run(artifacts, specs("wgan_default", "wgan"), state="failed")
    expected = ["dcgan_default", "gan_default", "wgan_default"]
    rows, written = write_report(artifacts, expected)

    assert rows == collect(artifacts, expected)
    assert [r["job"] for r in rows] == expected
    assert written[:3] == [artifacts / "summary.md", artifacts / "summary.csv", artifacts / "summary.json"]
    summary = json.loads((artifacts / "summary.json").read_text())
    assert summary["rows"] == rows and summary["best_by"] == "fid" and summary["format"] == Summary.FORMAT
    assert [row.model_dump() for row in Summary.read(artifacts / "summary.json").rows] == rows  # typed, read back
    assert summary["rows"][1]["protocol_values"] == summary["thesis_protocol"]  # every row carries its protocol
    with open(artifacts / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        table = list(reader)
    assert reader.fieldnames == COLUMNS and len(table) == len(rows)
    assert [t["job"] for t in table] == expected
    assert [t["state"] for t in table] == ["missing", "done", "failed"]
    assert float(table[1]["fid_mean"]) == rows[1]["fid_mean"] == 269.0
    assert table[0]["fid_mean"] == table[2]["fid_mean"] == ""  # no value: an empty cell
    md = (artifacts / "summary.md").read_text()
    assert md.startswith("# heartjobs summary") and md.split("\n## ")[0].endswith(markdown(rows))
    assert "| gan_default | gan | default | done | 269.00 ± 0.82 |" in md
    assert "| thesis | 269.07 ± 1.06 |" in md


def test_the_figures_are_written_when_runs_vary_one_hyperparameter(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("dcgan_lr0.0001", "dcgan", lr=0.0001), fids=[220.0, 221.0])
    _run(artifacts, specs("dcgan_lr0.0004", "dcgan", lr=0.0004), fids=[248.0, 247.0])
    _run(artifacts, specs("gan_default", "gan"), state="failed")
    _, written = write_report(artifacts)
    assert written[3:] == [artifacts / name for name in (*FIGURES, "report_losses_dcgan.png", "report.html")]
    for path in written[3:-1]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
            image.verify()


def test_no_figures_without_measured_runs_and_no_curve_from_a_single_point(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("dcgan_default", "dcgan"), state="failed")
    _, written = write_report(artifacts)
    assert [p.name for p in written] == ["summary.md", "summary.csv", "summary.json", "report.html"]
    assert not any((artifacts / name).exists() for name in FIGURES)

    _run(artifacts, specs("gan_default", "gan"), fids=[269.0])
    _, written = write_report(artifacts)
    # one value of each: nothing to plot against
    assert [p.name for p in written[3:]] == ["report_overview.png", "report_best_grids.png", "report.html"]


def test_report_cli_prints_the_compact_table_the_protocol_line_and_the_page_last(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("dcgan_lr0.0001", "dcgan", lr=0.0001), fids=[220.0, 221.0])
    _run(artifacts, specs("dcgan_lr0.0004", "dcgan", lr=0.0004), fids=[248.0, 247.0])
    _run(artifacts, specs("wgan_default", "wgan"), state="failed")
    specs("gan_bsize32", "gan", batch_size=32)  # a job spec with no run
    result = cli("report", artifacts, "--jobs", tmp_path / "jobs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # the few columns a person reads (no flags column: no run measured them); every column in summary.md
    assert lines[0] == "| model | configuration | FID (mean ± std) | epochs | time |"
    assert "| dcgan | lr = 0.0001 | 220.50 ± 0.50 | 2 | 2 s |" in lines
    assert "| wgan | default | failed | 1 | 1 s |" in lines
    assert "| - | gan_bsize32 | missing | - | - |" in lines  # a job without a run: its name
    assert "| job | model | configuration | state | FID |" in (artifacts / "summary.md").read_text()
    assert "not comparable to Table 1: 2 repeats; see report.html" in lines
    for name in ("summary.md", "summary.csv", "summary.json", *FIGURES):
        assert f"wrote {artifacts / name}" in lines
    assert lines[-1] == f"report: {(artifacts / 'report.html').resolve().as_uri()}"


def test_the_compact_table_shows_the_trusted_metric_the_flags_and_the_protocol_in_plain_words(tmp_path, specs):
    from heartjobs.report.console import compact

    artifacts = tmp_path / "artifacts"
    untrained = {"kind": "untrained", "path": "/cache/untrained.pth", "sha256": "ab12", "standard": False}
    off = {"weights": untrained, "standard_weights": False, "dims": 192, "n_generated": 500}
    _run(artifacts, specs("gan_default", "gan"), fids=[250.0] * 3, **off, **one_question())
    copycat = one_question(memorised=("pixels",))
    _run(artifacts, specs("gan_lr0.0001", "gan", lr=0.0001), fids=[20.0] * 3, **off, **copycat)
    _run(artifacts, specs("dcgan_default", "dcgan"), fids=[200.0] * 3, **off, **one_question(recall=0.05))
    _run(artifacts, specs("wgan_default", "wgan"), fids=[210.0] * 3, **off)  # no one-question numbers
    rows, written = write_report(artifacts)
    table = compact(rows, page_written=True)
    # FID on untrained Inception weights is not trusted: the column is FRD, the report's ranking metric
    assert table.header == ["model", "configuration", "FRD (mean ± std)", "flags", "epochs", "time"]
    cells = {(row[0], row[1]): row for row in table.rows}
    assert cells[("gan", "default")][2:] == ["7.50 ± 0.00", "no", "2", "2 s"]
    assert cells[("gan", "lr = 0.0001")][3] == "memorised"
    assert cells[("dcgan", "default")][3] == "collapsed"
    assert cells[("wgan", "default")][3] == "-"  # not measured, not "no"
    assert table.notes == [
        "not comparable to Table 1: untrained Inception weights, 500 generated images, 192-d features; see report.html",
        "ranked by FRD (FID: untrained Inception weights)",
    ]
    assert "not comparable" in compact(rows).notes[0] and "report.html" not in compact(rows).notes[0]


def test_the_protocol_line_names_a_phantom_and_an_image_size_other_than_the_thesis(tmp_path, specs):
    from heartjobs.report.console import protocol_line
    from heartjobs.report.summary import data_sources

    artifacts = tmp_path / "artifacts"
    run = _run(artifacts, specs("gan_default", "gan"), fids=[250.0] * 3)
    other = _run(artifacts, specs("wgan_default", "wgan"), fids=[240.0] * 3)
    rows, _ = write_report(artifacts)
    env = {"heartjobs": "0.1.0"}
    data = {"prepared": "data/prepared/heart64", "content_hash": "ab" * 32, "provenance": None}
    thesis_heart = {**data, "prepared": "data/prepared/hipct", "content_hash": "cd" * 32, "image_size": 256}

    def trained_on(folder, record):
        (folder / "env.json").write_text(json.dumps({**env, "data": record}))
        return protocol_line(rows, True, data_sources(rows))

    assert trained_on(other, thesis_heart) == "measured as the thesis was: comparable to Table 1"  # and run: none
    line = trained_on(run, {**data, "phantom": {"kind": "heart"}, "image_size": 64})
    assert {(s["prepared"], s.get("phantom"), s["image_size"]) for s in data_sources(rows)} == {
        ("data/prepared/heart64", "heart", 64),
        ("data/prepared/hipct", None, 256),
    }
    # the phantom's run differs, the other was measured as the thesis was: the line says which share
    assert line == "not comparable to Table 1 (1 of 2 runs): heart phantom, 64 px; see report.html"
    trained_on(other, {**thesis_heart, "prepared": "data/prepared/hipct128", "image_size": 128})  # both differ now
    assert protocol_line(rows, True, data_sources(rows)) == (
        "not comparable to Table 1: heart phantom, 64/128 px; see report.html"
    )
    # the thesis' heart at 256 px adds nothing to the line
    assert trained_on(run, thesis_heart) == "not comparable to Table 1 (1 of 2 runs): 128 px; see report.html"
    # a run folder from elsewhere: no markup, no size that isn't one
    trained_on(run, {**data, "phantom": {"kind": "<b>x</b>"}, "image_size": -1})
    assert [
        (s.get("phantom"), s.get("image_size")) for s in data_sources(rows) if s["prepared"].endswith("heart64")
    ] == [("unknown", None)]


def test_the_protocol_line_orders_numbers_as_numbers(tmp_path, specs):
    from heartjobs.report.console import protocol_line

    artifacts = tmp_path / "artifacts"
    for name, epochs in (("a", 350), ("b", 50), ("c", 550)):
        _run(artifacts, specs(name, "gan", epochs=epochs, lr=0.0001 * epochs), fids=[250.0] * 3)
    rows, _ = write_report(artifacts)
    assert "50/350/550 epochs" in protocol_line(rows)


def test_on_a_terminal_the_report_is_the_compact_table_the_protocol_then_the_page_link(tmp_path, specs, monkeypatch):
    import io

    from heartjobs.cli import output
    from heartjobs.cli import report as report_command
    from heartjobs.cli.main import main
    from heartjobs.progress import PlainConsole

    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("dcgan_lr0.0001", "dcgan", lr=0.0001), fids=[220.0, 221.0])
    screen = io.StringIO()
    terminal = PlainConsole(highlight=False, file=screen, force_terminal=True, width=100, color_system=None)
    monkeypatch.setattr(output, "out", terminal)
    monkeypatch.setattr(report_command, "out", terminal)
    assert main(["report", str(artifacts)]) == 0
    lines = screen.getvalue().splitlines()
    head = next(line for line in lines if "model" in line)
    assert [cell.strip() for cell in head.strip("┃ ").split("┃")] == [
        "model", "configuration", "FID (mean ± std)", "epochs", "time",
    ]  # fmt: skip
    assert any("dcgan" in line and "lr = 0.0001" in line and "220.50 ± 0.50" in line for line in lines)
    assert lines[-3] == "not comparable to Table 1: 2 repeats; see report.html"
    figures = "report_overview.png, report_best_grids.png"
    assert lines[-2] == f"wrote 5 files into {artifacts}: summary.md, summary.csv, summary.json, {figures}"
    assert lines[-1] == f"report: {(artifacts / 'report.html').resolve().as_uri()}"


def test_a_run_measured_or_trained_off_the_thesis_protocol_names_what_differs_and_gets_no_thesis_value(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("fixed", "dcgan", lr=0.0001), fids=[230.0] * 3, normalize="fixed")
    _run(artifacts, specs("fast", "dcgan", lr=0.0004, tf32=True), fids=[240.0] * 3)
    _run(artifacts, specs("small", "gan", lr=0.0001), fids=[250.0] * 3, n_generated=200, dims=192, n_real=5)
    _run(artifacts, specs("thesis", "wgan", latent_dim=200), fids=[250.0] * 3)  # the control
    rows = _by_job(collect(artifacts))
    assert rows["fixed"]["protocol"] == "differs: normalize=fixed"
    assert rows["fast"]["protocol"] == "differs: tf32=true"
    assert rows["small"]["protocol"] == "differs: n_generated=200, dims=192, n_real=5 of 3307"
    assert rows["thesis"]["protocol"] == "thesis" and rows["thesis"]["thesis_fid"] == 253.06
    for job in ("fixed", "fast", "small"):
        assert rows[job]["thesis_fid"] is None, job
    # precision is protocol, not configuration: the configuration keeps its Table 1 name
    assert rows["fast"]["configuration"] == "lr = 0.0004"


def test_metrics_that_failed_the_ladder_are_marked_and_best_runs_follow_frd(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    untrained = {"kind": "untrained", "path": "/cache/untrained.pth", "sha256": "ab12", "standard": False}
    failed = {"passes": False, "failures": ["noise_low not worse than held_out"], "spearman": 0.3, "n": 100}
    ladder = {"fid": failed, "kid": failed, "frd": {**failed, "passes": True, "failures": []}}
    off = {"weights": untrained, "standard_weights": False, "ladder": ladder}
    # FID would pick the first, FRD (5 + FID / 100 here, plus a shift) the second
    _run(artifacts, specs("low_fid", "gan", lr=0.0001), fids=[10.0] * 3, **off)
    second = _run(artifacts, specs("low_frd", "gan", lr=0.0004), fids=[20.0] * 3, **off)
    report = Measurement.read(second / "fid.json")
    report.frd["mean"] = 1.0
    report.write(second / "fid.json")
    rows, _ = write_report(artifacts)
    by_job = _by_job(rows)
    assert by_job["low_frd"]["frd_mean"] == 1.0 and by_job["low_fid"]["frd_mean"] == 5.1
    line = next(line for line in markdown(rows).splitlines() if "low_fid" in line)
    assert "| 10.00 ± 0.00 † | 0.2010 † | 5.10 ± 0.00 |" in line and "differs: standard_weights=false" in line
    assert by_job["low_fid"]["ladder_fails"] == "fid,kid"
    summary = json.loads((artifacts / "summary.json").read_text())
    assert summary["best_by"] == "frd"
    assert "fails the validity ladder" in summary["note"] and "by FRD" in (artifacts / "summary.md").read_text()


def test_no_best_runs_when_no_metric_is_trusted_and_verdicts_from_a_later_ladder_count(tmp_path, specs, monkeypatch):
    from heartjobs.evaluation import verdicts

    # the ladder's memory in a cache of this test's own: the session's prepared set is every test's, and a
    # failed FRD remembered for it would leave later tests' runs (test_metrics_over_training's) no best
    monkeypatch.setenv("HEARTJOBS_CACHE", str(tmp_path / "cache"))
    artifacts = tmp_path / "artifacts"
    untrained = {"kind": "untrained", "path": "/cache/untrained.pth", "sha256": "ab12", "standard": False}
    off = {"weights": untrained, "standard_weights": False}  # measured before any ladder: no verdicts inside
    record = specs("gan_default", "gan")
    _run(artifacts, record, fids=[10.0] * 3, **off)
    rows, _ = write_report(artifacts)
    assert rows[0]["ladder_fails"] is None and json.loads((artifacts / "summary.json").read_text())["best_by"] == "frd"
    # a ladder on the same set and feature spaces, run afterwards, fails FID and FRD: the report says so
    failed = {"passes": False, "failures": ["noise_low not worse than held_out"], "spearman": 0.1}
    verdicts.remember(
        {
            "content_hash": record["spec"]["data"]["content_hash"],
            "n": 50,
            "verdicts": {"fid": failed, "frd": failed},
            "protocol": {"fid": {"weights": untrained, "dims": 2048}, "frd": {"version": "v1"}},
        }
    )
    rows, written = write_report(artifacts)
    assert rows[0]["ladder_fails"] == "fid,frd"
    summary = json.loads((artifacts / "summary.json").read_text())
    assert summary["best_by"] is None and "No best runs" in summary["note"]
    assert artifacts / "report_best_grids.png" not in written  # no best runs to show


def test_a_killed_run_shows_as_died_and_the_finished_version_keeps_its_numbers(tmp_path, specs):
    from heartjobs.store.status import now_iso
    from heartjobs.system.liveness import this_process

    artifacts = tmp_path / "artifacts"
    record = specs("gan_default", "gan")
    finished = _run(artifacts, record, version=1, fids=[269.0] * 3)
    newer = _run(artifacts, record, version=2, state="running")  # status.json says running; no process
    [row] = collect(artifacts)
    assert row["state"] == "done; v0002 died" and row["run_dir"] == str(finished) and row["fid_mean"] == 269.0
    # while its process lives, it is running
    status = json.loads((newer / "status.json").read_text())
    (newer / "status.json").write_text(json.dumps({**status, **this_process(), "heartbeat": now_iso()}))
    assert collect(artifacts)[0]["state"] == "done; v0002 running"
    # measured while the next job trains (a worker's --overlap): trained, then evaluating, then done
    (newer / "status.json").write_text(json.dumps({**status, "state": "trained"}))
    assert collect(artifacts)[0]["state"] == "done; v0002 trained, measurement pending"
    alive = {**status, **this_process(), "heartbeat": now_iso(), "phase": "evaluating"}
    (newer / "status.json").write_text(json.dumps(alive))
    assert collect(artifacts)[0]["state"] == "done; v0002 evaluating"


def test_report_on_a_folder_that_is_not_there_is_an_error(tmp_path):
    result = cli("report", tmp_path / "nowhere")
    assert result.returncode == 2 and "no such folder" in result.stderr and not (tmp_path / "nowhere").exists()


def test_damaged_run_files_do_not_break_the_report(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    bad = _run(artifacts, specs("gan_default", "gan"), fids=[269.0] * 3)
    (bad / "fid.json").write_text(json.dumps({"metric": "fid", "repeats": []}))  # no fid_mean
    (bad / "losses.jsonl").write_bytes(b'[1, 2]\n{"epoch": 1, "d_loss": 0.6}\n\xff\xfe not utf-8\n')
    (bad / "samples" / "epoch_0002.png").write_bytes(b"not a png")
    good = _run(artifacts, specs("wgan_default", "wgan"), fids=[250.0] * 3)
    (good / "real.png").write_bytes(b"\x89PNG broken")
    rows, written = write_report(artifacts)
    by_job = _by_job(rows)
    assert by_job["gan_default"]["fid_mean"] is None and by_job["gan_default"]["epochs"] == 1
    assert by_job["wgan_default"]["fid_mean"] == 250.0
    assert artifacts / "report_best_grids.png" in written
    assert artifacts / "report_overview.png" in written  # the best run's real.png is damaged: said, not fatal
    assert cli("report", artifacts).returncode == 0


def test_runs_over_seeds_form_configurations_with_intervals_and_a_welch_comparison_to_the_default(tmp_path, specs):
    from scipy import stats

    artifacts = tmp_path / "artifacts"
    # three FID repeats each, as the thesis measured
    default = {0: [268.0, 270.0, 269.0], 1: [260.0, 262.0, 261.0], 2: [275.0, 273.0, 274.0]}
    variant = {0: [240.0, 242.0, 241.0], 1: [236.0, 238.0, 237.0], 2: [249.0, 247.0, 248.0], 3: [244.0, 246.0, 245.0]}
    for seed, fids in default.items():
        _run(artifacts, specs("gan_default" + (f"_s{seed}" if seed else ""), "gan", seed=seed), fids=fids)
    for seed, fids in variant.items():
        _run(artifacts, specs(f"gan_lr0.0001_s{seed}", "gan", lr=0.0001, seed=seed), fids=fids)
    # the same configuration and seed under another name (after the first in name order): the same training,
    # left out of the statistics
    _run(artifacts, specs("gan_lr0.0001_seed1_again", "gan", lr=0.0001, seed=1), fids=[100.0, 100.0, 100.0])
    _run(artifacts, specs("gan_lr0.0004", "gan", lr=0.0004), fids=[259.0, 260.0, 259.5])  # one run: no interval
    _run(artifacts, specs("gan_lr0.0004_s1", "gan", lr=0.0004, seed=1), state="failed")
    # a shorter study in the same folder: its variant is compared with its own default, of its own length
    for seed in (0, 1):
        _run(artifacts, specs(f"short_s{seed}", "gan", epochs=4, seed=seed), fids=[300.0, 301.0, 302.0 + seed])
        _run(artifacts, specs(f"short_lr_s{seed}", "gan", epochs=4, lr=0.0001, seed=seed), fids=[290.0, 291.0, 292.0])
    _run(artifacts, specs("short_lr", "gan", epochs=4, lr=0.0001, seed=2), state="failed")  # first by name, unmeasured
    rows, _ = write_report(artifacts)
    summary = json.loads((artifacts / "summary.json").read_text())
    configs = {c["configuration"]: c for c in summary["configurations"]}
    short = configs.pop("epochs = 4, lr = 0.0001")
    assert short["reference"] == "epochs = 4" and configs.pop("epochs = 4")["reference"] is None
    assert short["n"] == 2 and short["protocol"] == "differs: epochs=4"  # labelled by a measured run
    assert list(configs) == ["default", "lr = 0.0001", "lr = 0.0004"]

    # by hand, from each run's fid.json: one value per run, its mean over its FID repeats
    def fid_means(jobs):
        return [json.loads((artifacts / job / "v0001" / "fid.json").read_text())["fid_mean"] for job in jobs]

    d = fid_means(["gan_default", "gan_default_s1", "gan_default_s2"])
    v = fid_means([f"gan_lr0.0001_s{s}" for s in range(4)])
    assert d == [269.0, 261.0, 274.0] and v == [241.0, 237.0, 248.0, 245.0]
    for config, values in ((configs["default"], d), (configs["lr = 0.0001"], v)):
        n, mean, std = len(values), sum(values) / len(values), float(np.std(values, ddof=1))
        half = stats.t.ppf(0.975, n - 1) * std / n**0.5
        assert config["n"] == n and config["fid"]["n"] == n
        assert config["fid"]["mean"] == pytest.approx(mean) and config["fid"]["std"] == pytest.approx(std)
        assert config["fid"]["ci95"] == pytest.approx([mean - half, mean + half])
        assert config["kid"]["mean"] == pytest.approx(0.2 + mean / 10_000)  # KID and FRD the same way
        assert config["frd"]["mean"] == pytest.approx(5 + mean / 100)
    assert [r["seed"] for r in configs["lr = 0.0001"]["runs"]] == [0, 1, 2, 3]
    assert configs["lr = 0.0001"]["same_seed_jobs_left_out"] == ["gan_lr0.0001_seed1_again"]

    # the variant against its model's default: Welch's t-test, by hand
    vs = configs["lr = 0.0001"]["vs_reference"]["fid"]
    assert configs["lr = 0.0001"]["reference"] == "default" and configs["default"]["reference"] is None
    va, vb = np.var(v, ddof=1) / 4, np.var(d, ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    diff = np.mean(v) - np.mean(d)
    half = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
    assert vs["difference"] == pytest.approx(diff) and vs["df"] == pytest.approx(df)
    assert vs["ci95"] == pytest.approx([diff - half, diff + half])
    assert vs["p"] == pytest.approx(stats.ttest_ind(v, d, equal_var=False).pvalue) and vs["p"] < 0.05
    one = configs["lr = 0.0004"]
    assert one["n"] == 1 and one["fid"]["std"] is None and one["fid"]["ci95"] is None
    assert one["vs_reference"]["fid"] is None  # one run: no test
    # Table 1's value stands beside each configuration whatever its seeds, with the thesis' std named as
    # between FID repeats
    assert (configs["default"]["thesis_fid"], configs["lr = 0.0001"]["thesis_fid"]) == (269.07, 244.37)
    md = (artifacts / "summary.md").read_text()
    assert "## Configurations over seeds" in md and "between FID repeats of one training" in md
    line = next(x for x in md.splitlines() if x.startswith("| gan | lr = 0.0001 |"))
    assert f"| 4 | 0,1,2,3 | {np.mean(v):.2f} ± {np.std(v, ddof=1):.2f} [" in line
    assert f"| default | {diff:+.2f} [{diff - half:+.2f}, {diff + half:+.2f}], p {vs['p']:.3f} |" in line
    assert "| 244.37 ± 0.25 |" in line


def test_fidelity_diversity_and_memorisation_stand_beside_fid_labelled_with_their_question(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    passed, failed = {"passes": True, "failures": []}, {"passes": False, "failures": ["blur not worse"]}
    ladder = {"fid": passed, "kid": passed, "frd": passed, "precision": failed, "memorised_pixels": failed}
    ladder |= {"recall_radiomics": failed, "coverage_radiomics": passed}
    _run(artifacts, specs("gan_default", "gan"), fids=[250.0] * 3, **one_question(ladder=ladder))
    copycat = _run(
        artifacts,
        specs("gan_lr0.0001", "gan", lr=0.0001),
        fids=[20.0] * 3,  # a generator that returns training slices scores a fine FID
        **one_question(memorised=("pixels", "inception"), figure="memorisation_pairs.png"),
    )
    _png(copycat / "memorisation_pairs.png", 120)
    collapsing = one_question(recall=0.05, ratio=2.4, radiomic=None)  # measured without the radiomic space
    _run(artifacts, specs("dcgan_default", "dcgan"), fids=[200.0] * 3, **collapsing)
    _run(artifacts, specs("wgan_default", "wgan"), fids=[210.0] * 3)  # measured before issue 31: no such fields
    rows, written = write_report(artifacts)
    by_job = _by_job(rows)

    good, copy, collapsed, old = (by_job[j] for j in ("gan_default", "gan_lr0.0001", "dcgan_default", "wgan_default"))
    assert (good["precision"], good["density"], good["recall"], good["coverage"]) == (0.7, 0.9, 0.6, 0.8)
    assert good["ms_ssim_ratio"] == 1.05 and good["memorised"] is False and good["memorised_pixels"] == 0.001
    assert (good["precision_radiomics"], good["density_radiomics"]) == (0.65, 0.85)
    assert (good["recall_radiomics"], good["coverage_radiomics"]) == (0.5, 0.75)
    assert good["concerns"] is None and good["ladder_fails"] == "precision,recall_radiomics,memorised_pixels"
    assert collapsed["recall"] == 0.05 and collapsed["recall_radiomics"] is collapsed["coverage_radiomics"] is None
    assert copy["memorised"] is True and copy["memorised_spaces"] == "pixels, inception"
    assert copy["concerns"] == "memorised: pixels, inception"
    assert collapsed["concerns"] == "collapsed: recall 0.05 < 0.25, MS-SSIM generated/real 2.40 > 1.5"
    assert all(old[k] is None for k in ("precision", "recall", "recall_radiomics", "ms_ssim_ratio", "memorised"))
    assert old["numbers_protocol"] is None
    assert old["fid_mean"] == 210.0 and old["concerns"] is None

    md = (artifacts / "summary.md").read_text()
    # each number under its question and space: the feature network's, then the radiomic
    head = (
        "| FRD | fidelity: precision | fidelity: density | fidelity: precision (radiomic) | fidelity: density "
        "(radiomic) | diversity: recall | diversity: coverage | diversity: recall (radiomic) | diversity: coverage "
        "(radiomic) | diversity: MS-SSIM gen/real | memorisation | epochs |"
    )
    assert head in md
    # failed verdicts marked, each number on its own
    assert "| 0.700 † | 0.900 | 0.650 | 0.850 | 0.600 | 0.800 | 0.500 † | 0.750 | 1.05 | no (pixels 0.10 % †) |" in md
    assert "| memorised: pixels, inception |" in md
    lines = {line.split(" | ")[0].removeprefix("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| 0.700 | 0.900 | - | - | 0.050 | 0.800 | - | - | 2.40 |" in lines["dcgan_default"]  # no radiomic space
    assert "| - | - | - | - | - | - | - | - | - | - | 2 |" in lines["wgan_default"]  # the old record: blanks
    assert "`(radiomic)`: the same in the radiomic space" in md
    assert "fidelity (are the images realistic): precision and density" in md
    # every number's protocol: k, n, feature space, pairs, the memorisation threshold
    protocol = md.split("## Fidelity, diversity and memorisation: protocol")[1]
    assert "k = 5 in inception's feature space (2048-d), generated n = 3000 vs real n = 3307" in protocol
    assert "in the radiomic space: k = 5, 91 features, generated n = 998 vs real n = 1000" in protocol
    assert "MS-SSIM: 1000 pairs among the first 1000 generated, 1000 pairs among the 3307 real images" in protocol
    assert "0.01 quantile of the leave-one-out training slices nearest distances" in protocol
    assert "wgan_default" not in protocol

    # best per model: by FID, each shown with its fidelity, diversity and memorisation, flagged where wrong
    summary = json.loads((artifacts / "summary.json").read_text())
    assert summary["best_by"] == "fid"
    best = {entry["model"]: entry for entry in summary["best"]}
    assert [best[m]["job"] for m in ("dcgan", "gan", "wgan")] == ["dcgan_default", "gan_lr0.0001", "wgan_default"]
    assert best["gan"]["concerns"] == ["memorised: pixels, inception"] and best["gan"]["value"] == 20.0
    assert best["dcgan"]["concerns"][0].startswith("collapsed: recall 0.05") and best["wgan"]["concerns"] == []
    section = md.split("## Best per model")[1].split("\n## ")[0]
    assert "recall or coverage below 0.25" in section
    best_head = "| fidelity: precision (radiomic) | diversity: recall | diversity: coverage | diversity: recall ("
    assert best_head in section
    best_line = "| gan | gan_lr0.0001 | lr = 0.0001 | FID | 20.00 | 0.700 | 0.650 | 0.600 | 0.800 | 0.500 | 0.750 |"
    assert best_line in section
    assert "| dcgan | dcgan_default | default | FID | 200.00 | 0.700 | - | 0.050 | 0.800 | - | - | 2.40 |" in section
    blanks = " - |" * 8
    assert section.rstrip().endswith(f"| wgan | wgan_default | default | FID | 210.00 |{blanks} no |")
    assert best["gan"]["recall_radiomics"] == 0.5 and best["dcgan"]["coverage_radiomics"] is None

    with open(artifacts / "summary.csv", newline="") as f:
        table = {row["job"]: row for row in csv.DictReader(f)}
    assert float(table["gan_default"]["coverage"]) == 0.8 and table["wgan_default"]["coverage"] == ""
    assert float(table["gan_default"]["coverage_radiomics"]) == 0.75
    assert table["dcgan_default"]["recall_radiomics"] == ""
    assert table["gan_lr0.0001"]["memorised"] == "True" and table["wgan_default"]["memorised"] == ""

    page = (artifacts / "report.html").read_text()
    assert "<h2>Best per model</h2>" in page and '<td class="flagged">memorised: pixels, inception</td>' in page
    assert '<img src="gan_lr0.0001/v0001/memorisation_pairs.png"' in page  # the copycat's closest pairs
    assert page.count("memorisation_pairs.png") == 1
    assert "<th>diversity: MS-SSIM gen/real</th>" in page and "<th>fidelity: precision / density</th>" in page
    assert "<th>diversity: recall (radiomic)</th>" in page and "<td>0.500 †</td>" in page  # runs, best run
    configs = {c["configuration"]: c for c in summary["configurations"] if c["model"] == "gan"}
    assert configs["default"]["precision"]["mean"] == 0.7 and configs["lr = 0.0001"]["memorised_runs"] == {
        "flagged": 1,
        "of": 1,
    }
    # over seeds: the radiomic recall and coverage beside the feature network's, each failed verdict marked
    assert configs["default"]["recall_radiomics"]["mean"] == 0.5
    texts = dict(zip(configurations.HEADER, configurations.cells(configs["default"], "†"), strict=True))
    assert texts["diversity: recall / coverage / MS-SSIM gen/real"] == "0.600 / 0.800 / 1.05"
    assert texts["diversity (radiomic): recall / coverage"] == "0.500 † / 0.750"
    assert texts["fidelity (radiomic): precision / density"] == "0.650 / 0.850"
    dcgan = next(c for c in summary["configurations"] if c["model"] == "dcgan")
    radiomic_diversity = configurations.HEADER.index("diversity (radiomic): recall / coverage")
    assert configurations.cells(dcgan, "†")[radiomic_diversity] == "-"
    assert "<th>diversity (radiomic): recall / coverage</th>" in page and "0.500 † / 0.750" in page
    assert artifacts / "report_best_grids.png" in written


def _colour_columns(image: Image.Image, shade: int) -> list[int]:
    """The x of every pixel column of a figure that holds a square of `shade` grey (a uniform grid drawn; the
    grey colour map's 256 steps may land one off)."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return [int(x) for x in np.nonzero(((abs(pixels - shade) <= 1).all(axis=2)).sum(axis=0) >= 50)[0]]


def test_the_samples_row_is_the_real_grid_then_each_models_best_grid_and_grows_with_the_models(tmp_path, specs):
    artifacts = tmp_path / "artifacts"
    _run(artifacts, specs("gan_default", "gan"), fids=[250.0] * 3)
    _, written = write_report(artifacts)
    assert written[3] == artifacts / "report_overview.png"  # the page's first figure
    with Image.open(written[3]) as image:
        assert image.format == "PNG" and image.size == (2 * 300, 340)  # the real grid, the gan's: 3 in x 3.4 in
        real, samples = _colour_columns(image, 200), _colour_columns(image, 90)
    assert real and samples and max(real) < 300 <= min(samples)  # the real grid first, the samples beside it

    copycat = _run(artifacts, specs("dcgan_default", "dcgan"), fids=[200.0] * 3, **one_question(memorised=("pixels",)))
    _png(copycat / "samples" / "epoch_0002.png", 40)
    _run(artifacts, specs("wgan_default", "wgan"), fids=[210.0] * 3)
    shutil.rmtree(artifacts / "wgan_default" / "v0001" / "samples")  # a best run without a grid: a blank panel
    _, written = write_report(artifacts)
    summary = json.loads((artifacts / "summary.json").read_text())
    assert [(b["model"], b["epochs"]) for b in summary["best"]] == [("dcgan", 2), ("gan", 2), ("wgan", 2)]
    with Image.open(artifacts / "report_overview.png") as image:
        assert image.size == (4 * 300, 340)  # a panel more per model
        real, dcgan, gan = (_colour_columns(image, shade) for shade in (200, 40, 90))
    # in best_runs' order (dcgan, gan, wgan), after the real grid (the first best run's: dcgan's)
    assert max(real) < 300 <= min(dcgan) and max(dcgan) < 600 <= min(gan) and max(gan) < 900


def _measured_at(run: Path, epoch: int, fid: float, **fields) -> None:
    """A line of the run's metrics.jsonl: its checkpoint of `epoch` measured (FID `fid`, FRD 5 + FID / 100)."""
    record = json.loads((run / "resolved.json").read_text())
    snapshot = {"file": f"checkpoints/epoch_{epoch:04d}.pt", "epoch": epoch}
    measured = _fid_report(run, record, [fid], epoch, snapshot=snapshot, **fields)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(measured.line() + "\n")


def test_precision_and_recall_over_training_are_read_and_drawn_beside_fid_and_frd(tmp_path, specs):
    from heartjobs.store.rundir import RunDir

    artifacts = tmp_path / "artifacts"
    old = _run(artifacts, specs("gan_default", "gan"), fids=[250.0] * 3)
    for epoch, fid in ((1, 300.0), (2, 250.0)):  # measured before PRDC was
        _measured_at(old, epoch, fid)
    curve = RunDir(old).metric_curve()
    assert curve["epochs"] == [1, 2] and curve["fid"] == [300.0, 250.0]
    assert curve["precision"] == curve["recall"] == curve["ms_ssim_ratio"] == [None, None]
    write_report(artifacts)
    with Image.open(artifacts / "report_metrics_vs_epoch.png") as image:
        assert image.size == (2 * 600, 400)  # FID and FRD: no panel for numbers never measured

    new = _run(artifacts, specs("gan_lr0.0001", "gan", lr=0.0001), fids=[240.0] * 3)
    _measured_at(new, 1, 290.0, **one_question(precision=0.4, recall=0.2, ratio=1.8))
    _measured_at(new, 2, 240.0, **one_question(precision=0.6, recall=0.5, ratio=1.1))
    _measured_at(new, 3, 230.0)  # a checkpoint measured without PRDC
    lines = [json.loads(line) for line in (new / "metrics.jsonl").read_text().splitlines()]
    curve = RunDir(new).metric_curve()
    assert curve["epochs"] == [1, 2, 3]
    assert curve["precision"] == [r["prdc"]["precision"]["mean"] for r in lines[:2]] + [None] == [0.4, 0.6, None]
    assert curve["recall"] == [0.2, 0.5, None] and curve["ms_ssim_ratio"] == [1.8, 1.1, None]
    write_report(artifacts)
    with Image.open(artifacts / "report_metrics_vs_epoch.png") as image:
        assert image.size == (3 * 600, 400)  # FID, FRD, and precision and recall
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # each run keeps its colour in every panel (matplotlib's C0 blue, C1 orange): the precision and recall
    # panel holds the second run's orange alone
    blue, orange = (31, 119, 180), (255, 127, 14)

    def drawn(colour: tuple[int, int, int], panel: int) -> int:
        return int((abs(pixels[:, 600 * panel : 600 * (panel + 1)] - colour) <= 2).all(axis=2).sum())

    assert drawn(blue, 0) > 100 and drawn(orange, 0) > 100
    assert drawn(orange, 2) > 100 and drawn(blue, 2) == 0


# --- report.html in a real browser: headless Chromium (Debian's chromium and chromium-driver, which the test
# setup installs) opens the page of a hand-built 3-seed study; every image on it loads (checked through the
# page's DOM), the configuration table has a row per configuration and sorts by a click. The screenshot is
# kept in test-artifacts/report_page.png.

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BROKEN_IMAGES = "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver is missing: make test installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _study(artifacts: Path, specs) -> None:
    """Two dcgan configurations x three seeds, each run with a sample grid and the real grid; the first run
    with the numbers that ask one question each and its memorisation figure."""
    for seed, fids in enumerate(([290.0, 288.0, 289.0], [280.0, 282.0, 281.0], [295.0, 297.0, 296.0])):
        suffix = f"_s{seed}" if seed else ""
        first = one_question(figure="memorisation_pairs.png") if seed == 0 else {}  # one run's closest pairs
        made = _run(artifacts, specs(f"dcgan_default{suffix}", "dcgan", seed=seed), fids=fids, **first)
        if first:
            _png(made / "memorisation_pairs.png", 60)
        variant = specs(f"dcgan_lr0.0001{suffix}", "dcgan", lr=0.0001, seed=seed)
        _run(artifacts, variant, fids=[f - 60 for f in fids])


def test_the_study_page_loads_every_image_and_has_a_sortable_row_per_configuration(tmp_path, specs, browser):
    from selenium.webdriver.common.by import By

    artifacts = tmp_path / "artifacts"
    _study(artifacts, specs)
    write_report(artifacts)
    page = artifacts / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing from a network

    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script("return Array.from(document.images).map(i => i.getAttribute('src'))")
    # 2 configurations x (3 seeds + the real grid), the samples row, the best grids, FID vs lr, the dcgan
    # loss curves, and the memorisation figure of one run
    assert len(images) == 8 + 4 + 1, images
    assert browser.execute_script(BROKEN_IMAGES) == []
    rows = browser.find_elements(By.CSS_SELECTOR, "#configurations tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["default", "lr = 0.0001"]
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows] == ["3", "3"]  # runs over seeds
    assert "p " in rows[1].find_elements(By.TAG_NAME, "td")[8].text  # Welch's p beside the variant

    header = browser.find_elements(By.CSS_SELECTOR, "#configurations th")[4]  # FID
    header.click()  # ascending: the lower FID (lr = 0.0001) first
    rows = browser.find_elements(By.CSS_SELECTOR, "#configurations tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["lr = 0.0001", "default"]

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 100, 8000))
    SCREENSHOTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "report_page.png"))

    # the check can fail: a sample grid gone from a run folder is a broken image on the page
    (artifacts / "dcgan_lr0.0001_s2" / "v0001" / "samples" / "epoch_0002.png").unlink()
    browser.get(page.as_uri())
    broken = browser.execute_script(BROKEN_IMAGES)
    assert [Path(src).name for src in broken] == ["epoch_0002.png"] and "dcgan_lr0.0001_s2" in broken[0]
