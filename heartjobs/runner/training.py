"""A run's training context: the Trainer driven from its newest checkpoint to the spec's epochs, with the
sample grids, losses, checkpoints and TensorBoard events a run writes on the way, and its checkpoints measured
during training ([eval] every) without touching training's random state. Checkpoints and sample grids are
written in the background (heartjobs.store.background), one at a time: a stop and the end of training wait
for the write in flight, and a failed write is raised at the next checkpoint or at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from heartjobs import atomic
from heartjobs.errors import HeartjobsError, one_line
from heartjobs.evaluation.records import settings_hash, summary_line
from heartjobs.evaluation.runs import evaluate_run
from heartjobs.grids import save_grid
from heartjobs.models import build_networks
from heartjobs.plots import plot_losses, plot_metric_curve
from heartjobs.progress import TrainingProgress, console
from heartjobs.runner.eventlog import EventLog
from heartjobs.spec.schema import ResolvedSpec
from heartjobs.store.background import BackgroundWriter
from heartjobs.store.checkpoint import (
    checkpoint_epoch,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint_in_background,
    save_generator,
)
from heartjobs.store.prepared import PreparedSet
from heartjobs.store.rundir import RunDir
from heartjobs.store.status import StatusFile
from heartjobs.system import stopping
from heartjobs.training.loop import SAMPLE_GRID, Interrupted, Trainer


def train(
    spec: ResolvedSpec,
    run: RunDir,
    prepared: PreparedSet,
    device: torch.device,
    status: StatusFile,
    stop: stopping.StopRequest,
    stop_if_requested: Callable[[str], None],
) -> None:
    """Train from the newest checkpoint (or the start) to the spec's epochs, then save the generator.
    On a stop request: a checkpoint at the exact batch (written before it returns), then JobInterrupted. With
    [output] tensorboard, the run's event files are written on the way. Every background write is finished
    (or its error raised) before this returns."""
    trainer = Trainer(spec, prepared.tensor(), device)
    if (newest := newest_checkpoint(run, spec)) is not None:
        path, state = newest
        try:
            trainer.load_state_dict(state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:  # tensors of other networks
            raise HeartjobsError(f"{path}: not a checkpoint of this run's networks ({one_line(exc, 160)})") from None
        del newest, state  # the trainer holds what training needs; the file's copy is not kept meanwhile
        console.print(f"{spec.name}: resuming {run} from {path.name}")
    _write_losses(run, trainer.history)  # drops epochs logged after the checkpoint
    t = spec.train
    events = EventLog(run / RunDir.TENSORBOARD, trainer.epoch) if spec.output.tensorboard else contextlib.nullcontext()
    with events as log, BackgroundWriter() as writer:
        _measure_missed(spec, run, prepared, device, status, log)  # a stop during a measurement left it undone
        if not (run / RunDir.REAL_GRID).exists():
            picks = torch.randperm(prepared.count, generator=torch.Generator().manual_seed(t.seed + 4))
            save_grid(prepared.images[picks[:SAMPLE_GRID].numpy()], run / RunDir.REAL_GRID)
        try:
            _epochs(
                spec,
                trainer,
                run,
                status,
                stop,
                lambda path: _measure_during(spec, run, path, prepared, device, status, log),
                log,
                writer,
            )
        except Interrupted:
            path = save_checkpoint_in_background(
                writer, run.checkpoints, trainer.state_dict(), spec.spec_hash, t.keep_checkpoints, trainer.device
            )
            writer.wait()  # the stop's checkpoint is on disk before the job says it stopped
            stop_if_requested(f"after {trainer.epoch} epochs; checkpoint {path.name} written")
    save_generator(run.generator, trainer.G, spec.model_dump(mode="json"), trainer.epoch, spec.spec_hash)


def newest_checkpoint(run: RunDir, spec: ResolvedSpec) -> tuple[Path, dict] | None:
    """The checkpoint a resume continues from (the newest by name) and its checked contents; None when the
    run has none. One that is not this run's (another configuration, not a heartjobs checkpoint, tensors
    of other networks) is refused in one line naming it, and the one before it, if any, is offered."""
    checkpoints = list_checkpoints(run.checkpoints)
    if not checkpoints:
        return None
    try:
        state = load_checkpoint(checkpoints[-1], spec.spec_hash)
        with torch.device("meta"):  # the networks' tensor names and shapes, without their memory
            generator, discriminator = build_networks(spec.networks())
        for key, network, what in (("G", generator, "generator"), ("D", discriminator, "discriminator")):
            expected = {name: tuple(t.shape) for name, t in network.state_dict().items()}
            if {name: tuple(t.shape) for name, t in state[key].items()} != expected:
                raise HeartjobsError(
                    f"{checkpoints[-1]}: {key}: not the {what} this spec builds (tensor names or shapes differ)"
                )
        return checkpoints[-1], state
    except HeartjobsError as exc:
        if len(checkpoints) > 1:
            raise HeartjobsError(f"{exc} (move it away to resume from {checkpoints[-2].name})") from None
        raise


def _write_losses(run: RunDir, history: list[dict]) -> None:
    atomic.write_bytes(run / RunDir.LOSSES, "".join(atomic.dumps_json(h) + "\n" for h in history).encode())


def _epochs(
    spec: ResolvedSpec,
    trainer: Trainer,
    run: RunDir,
    status: StatusFile,
    stop: stopping.StopRequest,
    measure_checkpoint: Callable[[Path], None],
    log: EventLog | None,
    writer: BackgroundWriter,
) -> None:
    """Epochs until the spec's count; raises Interrupted (state consistent, not yet saved) on a stop. Every
    [eval] every epochs (and the last) the checkpoint is written and measured. Sample grids and checkpoints
    go to `writer`; the last write may still be in flight when this returns."""
    t = spec.train
    title = f"{spec.name} {run.path.name}"
    with TrainingProgress(title, t.epochs, len(trainer.bounds), trainer.epoch) as progress:

        def on_batch(done: int, total: int) -> None:
            progress.batch(done, total)
            status.beat()

        while trainer.epoch < t.epochs:
            stats = trainer.train_epoch(lambda: stop.signal is not None, on_batch).as_dict()
            atomic.append_lines(run / RunDir.LOSSES, [atomic.dumps_json(stats)])  # one short line per epoch
            progress.epoch(stats)
            if log is not None:
                log.epoch(stats)
            status.beat(epochs_done=trainer.epoch)
            last = trainer.epoch == t.epochs
            if trainer.epoch % t.sample_every == 0 or last:
                grid, images = run.sample_grid(trainer.epoch), trainer.samples().numpy()  # a fresh host array
                writer.submit(lambda images=images, grid=grid: save_grid(images, grid))
                if log is not None:
                    writer.wait()  # the event log reads the PNG the run saved
                    log.samples(grid, trainer.epoch)
                plot_losses(trainer.history, run / RunDir.LOSSES_PLOT, title)
            measured = _measured_epoch(spec, trainer.epoch)
            if trainer.epoch % t.checkpoint_every == 0 or last or measured:
                path = save_checkpoint_in_background(
                    writer, run.checkpoints, trainer.state_dict(), spec.spec_hash, t.keep_checkpoints, trainer.device
                )
                if measured:
                    writer.wait()  # measured from the file, once it is there
                    measure_checkpoint(path)
    if trainer.history and not (run / RunDir.LOSSES_PLOT).exists():
        plot_losses(trainer.history, run / RunDir.LOSSES_PLOT, title)


def _measured_epoch(spec: ResolvedSpec, epoch: int) -> bool:
    """Whether the checkpoint of `epoch` is measured during training ([eval] every, and the last epoch)."""
    every = spec.eval.every
    return every is not None and (epoch % every == 0 or epoch == spec.train.epochs)


def _measure_during(
    spec: ResolvedSpec,
    run: RunDir,
    checkpoint: Path,
    prepared: PreparedSet,
    device: torch.device,
    status: StatusFile,
    log: EventLog | None,
) -> None:
    """Measure a checkpoint with [eval.during]'s settings while training runs, without touching training's
    random state (the run stays bit-identical to one that is not measured); keep it as best.pt when it is
    the best so far ([eval] keep_best), and redraw the run's metric curve."""
    status.beat(force=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        record = evaluate_run(
            run.path, spec.eval.during_settings(), checkpoint=checkpoint, poll=status.beat, prepared=prepared
        )
    console.print(f"{spec.name}: epoch {record.epoch}, during training: {summary_line(record)}")
    if log is not None:
        log.measurement(record, during=True)
    best, choice = run.best_measured(record.settings_hash)  # of this setting's own curve
    if spec.eval.keep_best and best is not None and best.epoch == record.epoch:
        atomic.copy_file(checkpoint, run / RunDir.BEST)
    elif spec.eval.keep_best and best is None:
        console.print(f"{spec.name}: no best checkpoint kept: best is {choice.describe()}")
    curve = run.metric_curve(record.settings_hash)
    if curve:
        plot_metric_curve(curve, run / RunDir.METRICS_PLOT, f"{spec.name} {run.path.name}")


def _measure_missed(
    spec: ResolvedSpec,
    run: RunDir,
    prepared: PreparedSet,
    device: torch.device,
    status: StatusFile,
    log: EventLog | None,
) -> None:
    """On resume: measure the kept checkpoints of measured epochs that have no measurement yet."""
    if spec.eval.every is None:
        return
    tag = settings_hash(spec.eval.during_settings())
    done = {r.epoch for r in run.metric_records() if r.settings_hash == tag}
    for path in list_checkpoints(run.checkpoints):
        epoch = checkpoint_epoch(path)
        if "_batch_" not in path.name and _measured_epoch(spec, epoch) and epoch not in done:
            _measure_during(spec, run, path, prepared, device, status, log)
