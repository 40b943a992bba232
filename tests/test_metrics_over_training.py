"""Metrics over training: [eval] every = N measures checkpoints while a real run trains (with [eval.during]'s
cheaper settings) without changing what it trains, keeps the best checkpoint and draws the curve;
`heartjobs fid RUN --all-checkpoints` does the same afterwards; the report names the best epoch."""

from __future__ import annotations

import json

import torch

from heartjobs.evaluation.records import settings_hash
from heartjobs.report.summary import HEADER, cells, collect
from heartjobs.runner.lifecycle import run_job
from heartjobs.spec.loading import load_spec
from heartjobs.store.rundir import RunDir

from .conftest import cli, write_spec

FINAL = {
    "n_generated": 20,
    "repeats": 1,
    "dims": 64,
    "batch_size": 10,
    "weights": "untrained",
    "kid": False,
    "frd": False,
}
TRAIN = {"epochs": 4, "device": "cpu", "batch_size": 4, "keep_checkpoints": 1, "checkpoint_every": 4}


def _generator(run: RunDir) -> dict:
    return torch.load(run / RunDir.GENERATOR, map_location="cpu", weights_only=False)["state_dict"]


def test_checkpoints_measured_during_training_leave_training_unchanged_and_keep_the_best(tmp_path, prepared32):
    # FRD during training: FID on untrained weights never chooses the best (heartjobs.store.best)
    during = {**FINAL, "every": 2, "during": {"n_generated": 12, "repeats": 1, "frd": True}}
    spec_path = write_spec(tmp_path, "during", "gan", prepared32, eval=during, sample_every=2, **TRAIN)
    with open(spec_path, "a") as f:  # [output] is the file's last table
        f.write("tensorboard = true\n")
    run = RunDir(run_job(spec_path))
    (tmp_path / "plain").mkdir()
    plain = RunDir(
        run_job(write_spec(tmp_path / "plain", "plain", "gan", prepared32, eval=FINAL, sample_every=2, **TRAIN))
    )

    # the measurements did not touch training's random state: the same generator, bit for bit
    measured_g, plain_g = _generator(run), _generator(plain)
    assert measured_g.keys() == plain_g.keys()
    assert all(torch.equal(measured_g[k], plain_g[k]) for k in measured_g)

    spec = load_spec(spec_path)
    tag = settings_hash(spec.eval.during_settings())
    records = [r.data() for r in run.metric_records()]
    during_records = [r for r in records if r["settings_hash"] == tag]
    # epochs 2 and 4 (every 2, and the last), each its checkpoint, with the cheaper settings; then the final
    assert [(r["snapshot"]["epoch"], r["snapshot"]["file"], r["n_generated"]) for r in during_records] == [
        (2, "checkpoints/epoch_0002.pt", 12),
        (4, "checkpoints/epoch_0004.pt", 12),
    ]
    assert records[-1]["snapshot"]["file"] == "generator.pt" and records[-1]["n_generated"] == 20
    assert json.loads((run / RunDir.FID_REPORT).read_text())["n_generated"] == 20  # the final one stays as specified
    # checkpoint_every = 4 and keep 1: epoch 2's checkpoint was written to be measured, then pruned
    assert [p.name for p in run.checkpoints.glob("*.pt")] == ["epoch_0004.pt"]

    curve = run.metric_curve()
    fids = [r["fid_mean"] for r in during_records]
    assert curve["epochs"] == [2, 4] and curve["fid"] == fids and curve["last_epoch"] == 4
    frds = [r["frd"]["mean"] for r in during_records]
    assert curve["frd"] == frds and curve["best_by"] == "frd"
    assert curve["best_epoch"] == (2 if frds[0] <= frds[1] else 4)
    # fidelity and diversity apart at each epoch (PRDC is measured by default), for the report's figure
    assert curve["precision"] == [r["prdc"]["precision"]["mean"] for r in during_records]
    assert curve["recall"] == [r["prdc"]["recall"]["mean"] for r in during_records]
    assert torch.load(run / RunDir.BEST, map_location="cpu", weights_only=False)["epoch"] == curve["best_epoch"]
    assert (run / RunDir.METRICS_PLOT).stat().st_size > 1000

    # TensorBoard's own reader finds the losses per epoch, the measurements and the sample grids
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    losses = [json.loads(line) for line in (run / RunDir.LOSSES).read_text().splitlines()]
    d_loss = [(e.step, e.value) for e in events.Scalars("loss/D")]
    assert [step for step, _ in d_loss] == [1, 2, 3, 4]
    assert [v for _, v in d_loss] == [float(torch.tensor(e["d_loss"], dtype=torch.float32)) for e in losses]
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("fid/during")] == [
        (2, round(fids[0], 4)),
        (4, round(fids[1], 4)),
    ]
    assert [e.step for e in events.Scalars("fid/final")] == [4]
    # fidelity, diversity and memorisation (measured by default) under their questions, as fid.json has them
    final = json.loads((run / RunDir.FID_REPORT).read_text())
    for tag, value in {
        "fidelity/precision/final": final["prdc"]["precision"]["mean"],
        "diversity/coverage/final": final["prdc"]["coverage"]["mean"],
        "diversity/ms_ssim_ratio/final": final["ms_ssim"]["ratio"]["mean"],
        "memorisation/memorised_pixels/final": final["memorisation"]["spaces"]["pixels"]["fraction"]["mean"],
        "memorisation/memorised/final": float(final["memorisation"]["memorised"]),
    }.items():
        assert [(e.step, round(e.value, 4)) for e in events.Scalars(tag)] == [(4, round(value, 4))], tag
    assert [e.step for e in events.Images("samples")] == [2, 4]
    assert not (plain / "tensorboard").exists()

    row = next(r for r in collect(tmp_path / "artifacts") if r["job"] == "during")
    assert row["best_epoch"] == curve["best_epoch"]
    assert row["coverage"] == round(final["prdc"]["coverage"]["mean"], 4) and row["memorised"] is False
    assert row["memorisation_figure"] == str(run / "memorisation_pairs.png")  # the driver drew it
    if curve["best_epoch"] == 4:
        expected = "4 (best FRD at the last measured, 4)"
    else:
        expected = "4 (best FRD at 2, not the last measured, 4)"
    assert cells(row)[HEADER.index("epochs")] == expected


def test_fid_all_checkpoints_measures_each_kept_checkpoint_afterwards(tmp_path, prepared32):
    train = {**TRAIN, "keep_checkpoints": 10, "checkpoint_every": 1}
    run = RunDir(run_job(write_spec(tmp_path, "after", "gan", prepared32, eval=FINAL, **train)))
    assert not run.metric_curve()  # measured once, at the end: no curve

    # FID on untrained weights is not trusted to choose, and no other metric is measured: nothing is best,
    # and the console says why
    result = cli("evaluate", run.path, "--all-checkpoints", "--n", "12")
    assert result.returncode == 0, result.stderr
    untrusted = "FID: untrained Inception weights; FRD: not measured"
    assert f"4 checkpoints measured; no best: none ({untrusted})" in result.stdout
    assert not (run / RunDir.BEST).exists() and run.metric_curve()["best_epoch"] is None

    result = cli("fid", run.path, "--all-checkpoints", "--n", "12", "--frd")  # with FRD, best follows it
    assert result.returncode == 0, result.stderr
    records = [r.data() for r in run.metric_records() if r.snapshot["file"].startswith("checkpoints/")][4:]
    assert [r["snapshot"]["epoch"] for r in records] == [1, 2, 3, 4]
    assert {r["n_generated"] for r in records} == {12} and len({r["settings_hash"] for r in records}) == 1
    curve = run.metric_curve(records[0]["settings_hash"])
    best = min(records, key=lambda r: r["frd"]["mean"])  # the earliest of equals, as min() keeps it
    assert curve["epochs"] == [1, 2, 3, 4] and curve["best_epoch"] == best["snapshot"]["epoch"]
    chosen = "best by FRD (FID: untrained Inception weights)"
    assert f"4 checkpoints measured; {chosen} at epoch {best['snapshot']['epoch']}" in result.stdout
    assert torch.load(run / RunDir.BEST, map_location="cpu", weights_only=False)["epoch"] == best["snapshot"]["epoch"]
    assert (run / RunDir.METRICS_PLOT).is_file()

    both = cli("fid", run.path, "--all-checkpoints", "--checkpoint", run / "checkpoints" / "epoch_0001.pt")
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "--all-checkpoints" in both.stderr


def test_the_event_files_carry_each_number_under_its_question_and_old_records_only_theirs(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from heartjobs.runner.eventlog import EventLog

    from .test_report import _fid_report, one_question

    record = {"spec": {"name": "tb", "data": {"count": 50}}, "spec_hash": "abc"}
    copycat = one_question(memorised=("pixels",), pixels=0.9)
    copycat["prdc_radiomics"] = {"k": 5, "precision": {"mean": 0.4, "std": 0.0}}  # only part measured
    with EventLog(tmp_path / "new", None) as log:
        log.measurement(_fid_report(tmp_path, record, [30.0], 4, **copycat), during=False)
    with EventLog(tmp_path / "old", None) as log:
        log.measurement(_fid_report(tmp_path, record, [31.0], 4), during=True)  # before issue 31

    events = EventAccumulator(str(tmp_path / "new"), size_guidance={"scalars": 0}).Reload()
    found = {tag: [(e.step, round(e.value, 4)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert found == {
        "fid/final": [(4, 30.0)],
        "kid/final": [(4, 0.203)],
        "frd/final": [(4, 5.3)],
        "fidelity/precision/final": [(4, 0.7)],
        "fidelity/density/final": [(4, 0.9)],
        "diversity/recall/final": [(4, 0.6)],
        "diversity/coverage/final": [(4, 0.8)],
        "fidelity/precision_radiomics/final": [(4, 0.4)],
        "diversity/ms_ssim_ratio/final": [(4, 1.05)],
        "memorisation/memorised_pixels/final": [(4, 0.9)],
        "memorisation/memorised_inception/final": [(4, 0.0)],
        "memorisation/memorised/final": [(4, 1.0)],
    }
    old = EventAccumulator(str(tmp_path / "old"), size_guidance={"scalars": 0}).Reload()
    assert sorted(old.Tags()["scalars"]) == ["fid/during", "frd/during", "kid/during"]
