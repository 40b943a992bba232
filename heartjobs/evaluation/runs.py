"""Measuring a run folder: its final generator or a checkpoint measured by the driver and recorded in the
run (fid.json, evals/, metrics.jsonl), against its own set or another prepared set (a held-out heart), and
every kept checkpoint measured afterwards with its best kept as best.pt (`heartjobs evaluate RUN
[--all-checkpoints | --against PREPARED]`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from heartjobs import atomic
from heartjobs.errors import HeartjobsError
from heartjobs.evaluation.driver import MEMORISATION_FIGURE, measure
from heartjobs.evaluation.records import evaluation_record, settings_hash, summary_line, write_record
from heartjobs.evaluation.repeatlog import RepeatLog
from heartjobs.hashing import sha256_json
from heartjobs.plots import plot_metric_curve
from heartjobs.progress import console
from heartjobs.records import Measurement
from heartjobs.spec.loading import overridden
from heartjobs.spec.schema import EvalSection
from heartjobs.store.checkpoint import (
    list_checkpoints,
    load_snapshot,
)
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.rundir import RunDir
from heartjobs.store.status import mark_done
from heartjobs.system.device import resolve_device


def evaluate_run(
    run_dir: Path,
    settings: EvalSection | None = None,
    *,
    checkpoint: Path | None = None,
    device: str | None = None,
    poll: Callable[[], None] | None = None,
    save_images: Path | None = None,
    prepared: PreparedSet | None = None,
    against: PreparedSet | None = None,
) -> Measurement:
    """Measure a run's final generator (or one of its checkpoints) and record it in the run folder (see
    heartjobs.evaluation.records); returns the record. The measured images go to save_images as PNG, or,
    when the settings say save_images and this is the run's own measurement, to its eval_images/ (replaced
    once the measurement succeeded: they are copies). A run whose
    training had finished and only its evaluation had failed is marked done once its own evaluation
    succeeds. `prepared`: the run's set already read (the training's own copy), instead of reading it again.
    `against`: another prepared set (opened by open_against) measured instead of the run's own; its record
    names it, has a settings hash of its own and goes to evals/."""
    run = RunDir(run_dir)
    run.refuse_links()  # a run folder from elsewhere: nothing written through a link in it
    spec = run.spec()
    settings = settings or spec.eval
    own = checkpoint is None and settings == spec.eval and against is None
    # [eval] save_images: the run's own measurement's images, staged and swapped in once it succeeded
    staged = None
    if save_images is None and settings.save_images and own:
        staged = save_images = run / f"{RunDir.EVAL_IMAGES}.partial"
        shutil.rmtree(staged, ignore_errors=True)
    torch_device = resolve_device(device or spec.train.device, "--device" if device else "train.device")
    if against is None:
        prepared = prepared or PreparedSet.open(spec.data.prepared)
        if prepared.content_hash != spec.data.content_hash:
            raise HeartjobsError(
                f"{spec.data.prepared}: content_hash: the prepared set changed since {run} was trained on it"
            )
    else:
        prepared = against
    snapshot = load_snapshot(run, spec, checkpoint, torch_device)
    # what the values depend on: a stopped measurement of the same goes on from its last finished repeat
    gpu = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else None
    tag = settings_hash(settings, None if against is None else against.content_hash)
    key = sha256_json([tag, snapshot.file, snapshot.epoch, str(torch_device), gpu])[:12]
    progress = RepeatLog(run / RunDir.EVAL_PROGRESS.format(key=key))
    result = measure(
        snapshot.generator,
        spec.train.latent_dim,
        prepared,
        settings,
        torch_device,
        poll=poll,
        save_images=save_images,
        progress=progress,
        figures=run.path if own else None,
    )
    if own and (run / MEMORISATION_FIGURE).is_file() and result.get("memorisation"):
        result["memorisation"]["figure"] = MEMORISATION_FIGURE
    if staged is not None:
        shutil.rmtree(run / RunDir.EVAL_IMAGES, ignore_errors=True)
        staged.rename(run / RunDir.EVAL_IMAGES)
        result["saved_images"] = str((run / RunDir.EVAL_IMAGES).resolve())
    record = evaluation_record(run, spec, snapshot, result, against)
    where = write_record(run, record, settings, own)
    console.print(f"recorded in {where}")
    progress.remove()
    # the end of training's measurements: its own set's (fid.json), then [eval] against's; a run whose
    # evaluation failed is done once every one of them is there (one measured now included)
    status = run.status()
    ends = checkpoint is None and settings == spec.eval
    if ends and status.state == "failed" and status.phase == "evaluating" and _end_measured(run, spec):
        mark_done(run / RunDir.STATUS)
    return record


def _end_measured(run: RunDir, spec) -> bool:
    """Whether every measurement the end of training makes is recorded: fid.json, and the final generator
    measured against each of [eval] against's sets (known by content hash: the folder may have moved)."""
    if not (run / RunDir.FID_REPORT).is_file():
        return False
    measured = {
        r.against.get("content_hash")
        for r in run.metric_records()
        if r.against and (r.snapshot or {}).get("file") == RunDir.GENERATOR
    }
    for path in spec.eval.against:
        try:
            if PreparedSet.open(path).content_hash not in measured:
                return False
        except HeartjobsError:
            return False
    return True


def measure_checkpoints(run_dir: Path, overrides: dict, device: str | None = None) -> list[Measurement]:
    """`heartjobs fid RUN --all-checkpoints`: every kept end-of-epoch checkpoint of a run measured as during
    training ([eval.during]'s settings, `overrides` on top), its metric curve drawn and its best checkpoint
    kept as best.pt ([eval] keep_best); returns the records, oldest epoch first."""
    run = RunDir(run_dir)
    run.refuse_links()  # a run folder from elsewhere: nothing written through a link in it
    spec = run.spec()
    checkpoints = [p for p in list_checkpoints(run.checkpoints) if "_batch_" not in p.name]
    if not checkpoints:
        raise HeartjobsError(f"{run.checkpoints}: no checkpoints kept (see [train] keep_checkpoints)")
    settings = overridden(spec.eval.during_settings(), overrides, {})
    prepared = PreparedSet.open(spec.data.prepared)
    records = []
    for path in checkpoints:
        record = evaluate_run(run.path, settings, checkpoint=path, device=device, prepared=prepared)
        console.print(f"{run.path} ({record.snapshot['file']}): {summary_line(record)}")
        records.append(record)
    # best.pt: the best of this setting's whole curve (also epochs measured during training whose
    # checkpoints are gone); replaced only when that best is one of the checkpoints measured now
    best, _ = run.best_measured(records[-1].settings_hash)
    if spec.eval.keep_best and best is not None and best.snapshot in [r.snapshot for r in records]:
        atomic.copy_file(run / best.snapshot["file"], run / RunDir.BEST)
    curve = run.metric_curve(records[-1].settings_hash)
    if curve:
        plot_metric_curve(curve, run / RunDir.METRICS_PLOT, f"{spec.name} {run.path.name}")
    return records
