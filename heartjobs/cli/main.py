"""The `heartjobs` command: a thin layer of argument parsing over the package's functions."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from heartjobs import __version__
from heartjobs.choices import DEVICES, FEATURE_DIMS, NORMALIZATIONS
from heartjobs.errors import HeartjobsError, one_line

DEBUG_ENV = "HEARTJOBS_DEBUG"
EPILOG = """examples:
  heartjobs data phantom && heartjobs data prepare data/phantom --out data/prepared/phantom64 --size 64
  heartjobs validate jobs/smoke/*.toml
  heartjobs run jobs/smoke/gan.toml            (then --resume after an interruption)
  heartjobs evaluate artifacts/smoke_gan/v0001
  heartjobs enqueue jobs/*.toml --queue queue/jobs && heartjobs worker --queue queue/jobs
  heartjobs report artifacts --jobs jobs

exit codes:
  0    done (also: a stop signal that came after the job had finished)
  2    bad input or environment: one line naming the file and field (--debug: the traceback too)
  75   the same run or configuration is being run by another process; not run twice
  128+N stopped by signal N (15 SIGTERM, 2 SIGINT, 12 SIGUSR2) after writing a checkpoint: --resume continues
  130  interrupted outside a run (Ctrl-C)
"""
# markup off: what heartjobs prints holds user text (paths, job names, errors), and a path with "[x]" or
# "[/x]" in it must print as it is, not be taken for rich markup (or raise on it)
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)  # long notes stay one line each


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cmd_phantom(args: argparse.Namespace) -> None:
    from heartjobs.data.phantom import PhantomParams, contact_sheet_path, generate

    params = PhantomParams(slices=args.slices, size=args.size, seed=args.seed)
    manifest, made = generate(args.out, params, workers=args.workers, force=args.force)
    verb = "wrote" if made else "up to date:"
    total = sum(f["bytes"] for f in manifest["files"])
    out.print(
        f"{verb} {args.out}: {len(manifest['files'])} slices {args.size}x{args.size} uint16 jp2 "
        f"(seed {args.seed}, {total / 2**20:.1f} MiB); contact sheet {contact_sheet_path(Path(args.out))}"
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    from heartjobs.data.prepare import PrepareParams, prepare

    params = PrepareParams(
        size=args.size,
        every=args.every,
        window=args.window,
        window_percentiles=tuple(args.window_percentiles) if args.window_percentiles else None,
        skip_bad=args.skip_bad,
        export_png=args.export_png,
    )
    manifest, made = prepare(args.src, args.out, params, workers=args.workers, force=args.force)
    out.print(f"{'prepared' if made else 'up to date:'} {args.out}")
    _print_summary(Path(args.out), manifest)


def cmd_info(args: argparse.Namespace) -> None:
    from heartjobs.store.prepared import PreparedSet

    prepared = PreparedSet.open(args.path)
    _print_summary(prepared.path, prepared.manifest)


def cmd_needs(args: argparse.Namespace) -> None:
    from heartjobs.data.needs import needed_sets

    sets, errors = needed_sets(args.specs)
    for exc in errors:
        _print_error(exc)
    for folder, ready in sets:
        print(f"{folder}\t{'ready' if ready else 'missing'}")  # plain print: tab-separated for scripts
    _fail_if_bad(len(errors), len(args.specs), "are invalid")


def cmd_run(args: argparse.Namespace) -> None:
    from heartjobs.runner.lifecycle import run_job

    if args.result is not None and args.result.is_dir():  # found out now, not after hours of training
        raise HeartjobsError(f"--result {args.result}: is a folder; give a file path")
    from heartjobs.system.cpus import use_allotted_cpus
    from heartjobs.system.launching import die_with_starter
    from heartjobs.system.stopping import stop_on_signals_until_exit

    stop = stop_on_signals_until_exit()  # taken first: a signal during setup is a request, not a death
    die_with_starter()
    use_allotted_cpus()
    run_dir = run_job(args.spec, resume=args.resume, result_file=args.result, stop=stop, device=args.device)
    if stop.signal is not None:  # it came after the job had finished: nothing was stopped
        out.print("a stop signal came after the job had finished; nothing to stop")
    out.print(f"done: {run_dir}")


def cmd_fid(args: argparse.Namespace) -> None:
    from heartjobs.evaluation.records import summary_line
    from heartjobs.evaluation.runs import evaluate_run, measure_checkpoints
    from heartjobs.store.rundir import RunDir
    from heartjobs.system.cpus import use_allotted_cpus

    use_allotted_cpus()
    spec = RunDir(args.run_dir).spec()
    overrides = {
        key: value
        for key, value in {
            "n_generated": args.n,
            "repeats": args.repeats,
            "dims": args.dims,
            "batch_size": args.batch_size,
            "weights": args.weights,
            "normalize": args.normalize,
            "n_real": args.n_real,
            "frd": args.frd,
            "frd_n": args.frd_n,
        }.items()
        if value is not None
    }
    if args.all_checkpoints:
        if args.checkpoint or args.save_images:
            raise HeartjobsError(
                "--all-checkpoints: measures every kept checkpoint; leave out --checkpoint and --save-images"
            )
        from heartjobs.store.best import value

        records = measure_checkpoints(args.run_dir, overrides, device=args.device)
        best, choice = RunDir(args.run_dir).best_measured(records[-1].settings_hash)
        if best is None:
            out.print(f"{len(records)} checkpoints measured; no best: {choice.describe()}")
        else:
            measured = f"{choice.metric.upper()} {value(best, choice.metric):.3f}"
            out.print(f"{len(records)} checkpoints measured; best {choice.describe()} at epoch {best.epoch} "
                      f"({measured}, n={best.n_generated} x {len(best.repeats)})")  # fmt: skip
        return
    settings = spec.eval.model_copy(update=overrides)
    taken = args.save_images is not None and args.save_images.exists()
    if taken and (not args.save_images.is_dir() or any(args.save_images.iterdir())):
        raise HeartjobsError(f"--save-images {args.save_images}: exists and is not an empty folder; give a new one")
    report = evaluate_run(
        args.run_dir, settings, checkpoint=args.checkpoint, device=args.device, save_images=args.save_images
    )
    out.print(f"{args.run_dir} ({report.snapshot['file']}, epoch {report.epoch}): {summary_line(report)}")


def cmd_ladder(args: argparse.Namespace) -> None:
    from heartjobs import atomic
    from heartjobs.evaluation.ladder import parse_metrics, run_ladder
    from heartjobs.evaluation.verdicts import remember
    from heartjobs.plots import plot_ladder
    from heartjobs.store.prepared import PreparedSet
    from heartjobs.system.cpus import use_allotted_cpus
    from heartjobs.system.device import resolve_device

    use_allotted_cpus()

    metrics = parse_metrics(args.metrics)
    prepared = PreparedSet.open(args.prepared)
    try:  # the output folder first: not found unusable after minutes of measuring
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeartjobsError(f"--out {args.out}: cannot make the folder ({exc.strerror})") from None
    if not os.access(args.out, os.W_OK):
        raise HeartjobsError(f"--out {args.out}: not writable")
    ladder = run_ladder(
        prepared,
        metrics,
        n=args.n,
        seed=args.seed,
        weights=args.weights,
        dims=args.dims,
        batch_size=args.batch_size,
        device=resolve_device(args.device, "--device"),
    )
    rows = [{"rung": r["name"], **{m: f"{r[m]:.4g}" for m in metrics}} for r in ladder["rungs"]]
    rho = {m: "-" if v["spearman"] is None else f"{v['spearman']:.3f}" for m, v in ladder["verdicts"].items()}
    rows.append({"rung": "spearman rho", **rho})
    rows.append({"rung": "verdict", **{m: "passes" if v["passes"] else "FAILS" for m, v in ladder["verdicts"].items()}})
    weights = ladder["protocol"].get("fid", ladder["protocol"].get("kid", {})).get("weights", {}).get("kind")
    title = f"validity ladder: {args.prepared}, n={ladder['n']} per rung"
    title += f", {weights} Inception" if weights else ""
    if not out.is_terminal:  # plain lines: say which column is which
        rows.insert(0, {"rung": "rung", **{m: m for m in metrics}})
    _print_rows(title, ["rung", *metrics], rows)
    atomic.write_json(args.out / "ladder.json", ladder)
    plot_ladder(ladder, args.out / "ladder.png")
    remember(ladder, args.out / "ladder.json")  # later measurements on this set carry these verdicts
    out.print(f"wrote {args.out / 'ladder.json'} and {args.out / 'ladder.png'} ({ladder['seconds']:.0f} s)")


def cmd_sweep(args: argparse.Namespace) -> None:
    from heartjobs.spec.sweep import default_jobs_folder, write_jobs

    out_dir = args.out or default_jobs_folder(args.file)
    paths = write_jobs(args.file, out_dir, dry_run=args.dry_run)
    for path in paths:
        out.print(f"{'would write' if args.dry_run else 'wrote'} {path}")
    out.print(f"{len(paths)} jobs")


def _valid_specs(paths: list[Path]) -> tuple[list[tuple[Path, object]], int]:
    """Validate every spec, and that its evaluation can run here, and report each bad one on its own line;
    (the good ones, how many were bad)."""
    from heartjobs.evaluation.preflight import check_measurable
    from heartjobs.spec.loading import load_spec

    good, bad = [], 0
    for path in paths:
        try:
            spec = load_spec(path)
            check_measurable(spec, path)
            good.append((path, spec))
        except HeartjobsError as exc:
            bad += 1
            _print_error(exc)
    return good, bad


def _fail_if_bad(bad: int, total: int, verdict: str) -> None:
    if bad:
        raise HeartjobsError(f"{bad} of {total} specs {verdict}")


def cmd_enqueue(args: argparse.Namespace) -> None:
    from heartjobs.queue.folders import Queue

    queue = Queue(args.queue)  # touches nothing on disk; add() reports a folder it cannot write
    good, bad = _valid_specs(args.specs)
    for path, _ in good:
        try:
            out.print(f"queued {path} -> {queue.add(path)}")
        except OSError as exc:  # read-only, full, not a folder
            raise HeartjobsError(f"--queue {args.queue}: cannot add {path} there ({one_line(exc, 200)})") from None
    _fail_if_bad(bad, len(args.specs), "refused; the others are queued")


def cmd_submit(args: argparse.Namespace) -> None:
    from heartjobs.cluster import submit as cluster

    if args.status is not None:
        _print_submission_status(cluster.read_submission(args.folder if args.status is True else args.status))
        return
    if not args.specs:
        raise HeartjobsError("submit: give job spec files, or --status to see a submission")
    options = _submit_options(args)
    cluster.check_available(options)
    good, bad = _valid_specs(args.specs)
    with cluster.submitting(args.folder):  # what is held, then what is submitted, decided by one submit at a time
        plan = cluster.plan(good, args.folder, force=args.force)
        for note in plan.notes:
            err.print(f"note: {note}")
        for skipped in plan.skipped:
            out.print(f"skipped {skipped['spec']}: {skipped['reason']}")
        if plan.submit:
            options, note = cluster.resolve_gpus(options, plan.submit)
            if note:
                err.print(f"note: {note}")
            record, jobs = cluster.submit(plan.submit, options, args.folder)
    if plan.submit:
        _print_submitted(record, options.executor)
        if args.wait:
            _wait_for_submission(record, jobs)
    else:
        out.print("nothing to submit")
    _fail_if_bad(bad, len(args.specs), "refused; the others are submitted" if plan.submit else "refused")


def _submit_options(args: argparse.Namespace):
    from heartjobs.cluster.options import SubmitOptions

    return SubmitOptions(
        executor=args.executor,
        partition=args.partition,
        gpus_per_job=args.gpus_per_job,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        time=args.time,
        array_parallelism=args.array_parallelism,
        container=args.container.resolve() if args.container else None,
        account=args.account,
        qos=args.qos,
        setup=tuple(args.setup),
        signal_delay_s=args.signal_delay,
        max_timeouts=args.max_timeouts,
        force=args.force,
        extra=dict(_key_value(text) for text in args.sbatch),
    )


def _print_submitted(record: dict, executor: str) -> None:
    count = len(record["tasks"])
    if executor == "slurm":  # submitit submits a single task as a plain job, not an array
        kind = "a Slurm job array" if count > 1 else "a Slurm job"
    else:
        kind = "local submitit jobs" if count > 1 else "a local submitit job"
    tasks = f"{count} tasks" if count > 1 else "1 task"
    out.print(f"submitted {tasks} as {kind} ({record['folder']})")
    for task in record["tasks"]:
        out.print(f"  {task['index']:3d} {task['job']} -> {task['job_id']}  log {task['stdout']}")
    out.print(f"status: heartjobs submit --status {record['folder']}")


def _wait_for_submission(record: dict, jobs: list) -> None:
    """--wait: a line per state change; an error line per task that did not complete."""
    from heartjobs.cluster.states import wait

    rows = wait(record, jobs, lambda row: out.print(_status_line(row)))
    failed = [row for row in rows if row["state"] != "COMPLETED"]
    for row in failed:
        err.print(f"error: {row['job']} ({row['job_id']}): {row['state']}; log {row['log']}")
    if failed:
        raise HeartjobsError(f"{len(failed)} of {len(rows)} tasks did not complete")


def _key_value(text: str) -> tuple[str, str | bool]:
    """--sbatch KEY=VALUE, or KEY alone for a flag (e.g. exclusive, hold)."""
    key, sep, value = text.partition("=")
    key = key.strip().removeprefix("--")
    if not key or (sep and not value.strip()) or any(c.isspace() for c in key):
        raise HeartjobsError(f"--sbatch: {text!r} is not KEY=VALUE or a flag KEY (e.g. constraint=a100, exclusive)")
    return key, value.strip() if sep else True


def _status_line(row: dict) -> str:
    return f"{row['index']:3d} {row['job']} {row['job_id']}: {row['state']}  run {row['run']}"


def _print_submission_status(record: dict) -> None:
    from heartjobs.cluster.states import status

    rows = status(record)
    title = f"submission {record['folder']} ({record['executor']}, {record['created']})"
    _print_rows(title, ["index", "job", "job_id", "state", "run", "log"], rows)


def _print_rows(title: str, columns: list[str], rows: list[dict]) -> None:
    """A table on a terminal; otherwise a title line and one tab-separated line per row (for logs, grep)."""
    if not out.is_terminal:
        print(title)  # plain print: rich would expand the tabs
        for row in rows:
            print("\t".join(str(row.get(c, "")) for c in columns))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    out.print(table)


def cmd_worker(args: argparse.Namespace) -> None:
    from heartjobs.queue.folders import Queue
    from heartjobs.queue.worker import Worker

    try:
        worker = Worker(Queue(args.queue), slot=args.slot, force=args.force, poll_s=args.poll)
    except OSError as exc:
        raise HeartjobsError(f"--queue {args.queue}: cannot use it as a queue ({one_line(exc, 200)})") from None
    counts = worker.serve(watch=args.watch)
    out.print("worker: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if worker.stop_signal is not None:  # a requested stop, its job checkpointed: not an error
        out.print(f"worker: stopped by signal {worker.stop_signal}; an interrupted job waits in pending/ to resume")


def cmd_queue_status(args: argparse.Namespace) -> None:
    from heartjobs.queue.folders import Queue, status

    rows = []
    for state, entries in status(Queue(args.queue)).items():
        for row in entries:
            details = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("job", "name"))
            rows.append({"state": state, "job": row["job"], "details": details})
        if not entries:
            rows.append({"state": state, "job": "-", "details": ""})
    _print_rows(f"queue {args.queue}", ["state", "job", "details"], rows)


def cmd_report(args: argparse.Namespace) -> None:
    from heartjobs.report.summary import HEADER, cells, markdown, write_report

    rows, written = write_report(args.artifacts, _expected_jobs(args.jobs) if args.jobs else None)
    if out.is_terminal:
        table = Table(title=f"heartjobs summary ({args.artifacts})")
        for column in HEADER:
            table.add_column(column)
        for row in rows:
            table.add_row(*cells(row))
        out.print(table)
    else:  # plain text for logs: the markdown table
        out.print(markdown(rows))
    for path in written:
        out.print(f"wrote {path}")


def _expected_jobs(folder: Path) -> list[str]:
    """The job names of a folder of specs (a spec that can't be read counts by its file name)."""
    from heartjobs.spec.loading import parse_spec

    names = []
    for path in sorted(Path(folder).glob("*.toml")):
        if not path.name.endswith(".sweep.toml"):
            try:
                names.append(parse_spec(path).name)
            except HeartjobsError:
                names.append(path.stem)
    return names


def cmd_validate(args: argparse.Namespace) -> None:
    good, bad = _valid_specs(args.specs)
    for path, spec in good:
        out.print(f"ok: {path} ({spec.model}, {spec.data.size} px, spec hash {spec.spec_hash})")
    _fail_if_bad(bad, len(args.specs), "are invalid")


def cmd_show(args: argparse.Namespace) -> None:
    import json

    from heartjobs.spec.loading import load_spec

    spec = load_spec(args.spec)
    shown = {"spec_hash": spec.spec_hash, **spec.model_dump(mode="json"), "parameters": _parameter_counts(spec)}
    out.print_json(json.dumps(shown))


def _parameter_counts(spec) -> dict:
    """The networks' trainable parameters at the spec's image size, counted on the meta device (no memory,
    no initialisation)."""
    import torch

    from heartjobs.models import build_networks, count_parameters

    with torch.device("meta"):
        generator, discriminator = build_networks(spec.networks())
    return {"generator": count_parameters(generator), "discriminator": count_parameters(discriminator)}


def _print_summary(path: Path, manifest: dict) -> None:
    window = manifest["window"]
    table = Table(title=f"prepared set {path}", show_header=False)
    table.add_row(
        "images",
        f"{manifest['count']} x {manifest['shape'][1]} x {manifest['shape'][2]} x "
        f"{manifest['shape'][3]} {manifest['dtype']}",
    )
    table.add_row(
        "source",
        f"{manifest['source']} ({len(manifest['sources'])} slices, "
        f"{manifest['source_shape'][0]}x{manifest['source_shape'][1]}, {window['source_bits']}-bit)",
    )
    table.add_row("every", str(manifest["parameters"]["every"]))
    table.add_row("window", _window_line(window))
    if window.get("assumption"):  # sets made before the manifest said so lack it
        table.add_row("assumption", window["assumption"])
    table.add_row("skipped", ", ".join(s["name"] for s in manifest["skipped"]) or "none")
    table.add_row("content hash", manifest["content_hash"][:16])
    table.add_row("contact sheet", str(path / "contact_sheet.png"))
    if manifest.get("png"):
        table.add_row("png", str(path / manifest["png"]))
    out.print(table)


def _window_line(window: dict) -> str:
    """The 16 -> 8 bit window's mode first, then its range (older manifests have no mode: inferred)."""
    pct = window["percentiles"]
    mode = window.get("mode") or ("percentiles" if pct else "none")
    detail = {
        "percentiles": f"percentiles {pct[0]} / {pct[1]}" if pct else "percentiles",
        "full": f"full, the whole {window['source_bits']}-bit range",
        "none": "none, 8-bit as is",
    }.get(mode, mode)
    return f"{detail}: {window['low']:.1f} .. {window['high']:.1f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartjobs",
        description="Train GANs on heart CT slices and measure them (FID, KID, FRD), as batch jobs from TOML specs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"heartjobs {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get(DEBUG_ENV, "") not in ("", "0"),
        help=f"on an error, print the traceback with its causes too (or set {DEBUG_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="make and prepare CT slice data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = data_commands.add_parser("phantom", help="write the synthetic heart-CT phantom as JPEG 2000 slices")
    p.add_argument("--out", type=Path, default=Path("data/phantom"), help="output folder (default data/phantom)")
    p.add_argument("--slices", type=_positive_int, default=200, help="number of slices (default 200)")
    p.add_argument("--size", type=int, default=512, help="slice width and height in px (default 512)")
    p.add_argument("--seed", type=int, default=0, help="anatomy and noise seed (default 0)")
    p.add_argument("--workers", type=_positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.set_defaults(func=cmd_phantom)

    p = data_commands.add_parser("prepare", help="turn a folder of slices into a training set")
    p.add_argument("src", type=Path, help="folder of .jp2/.j2k/.jpx/.png/.tif slices")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/prepared/hipct")
    p.add_argument("--size", type=int, default=256, help="output width and height in px (default 256)")
    p.add_argument("--every", type=_positive_int, default=1, help="keep every K-th slice (default 1)")
    p.add_argument(
        "--window",
        choices=("percentiles", "full"),
        default="percentiles",
        help="16 -> 8 bit conversion, an assumption (the thesis does not say): percentiles of a sample "
        "(default) or full, the whole range (value / 257)",
    )
    p.add_argument(
        "--window-percentiles",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="intensity window for 16-bit data (default 0.5 99.5; 8-bit data is kept as is)",
    )
    p.add_argument("--export-png", action="store_true", help="also write the 8-bit PNGs to OUT/png")
    p.add_argument("--skip-bad", action="store_true", help="skip corrupt slices and list them in the manifest")
    p.add_argument("--workers", type=_positive_int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace an existing set made differently")
    p.set_defaults(func=cmd_prepare)

    p = data_commands.add_parser("info", help="summarise a prepared set")
    p.add_argument("path", type=Path, help="a prepared set's folder, e.g. data/prepared/phantom64")
    p.set_defaults(func=cmd_info)

    p = data_commands.add_parser(
        "needs", help="the prepared sets job specs train on: one line each, FOLDER<tab>ready|missing"
    )
    p.add_argument("specs", type=Path, nargs="+", metavar="SPEC", help="job specs (TOML)")
    p.set_defaults(func=cmd_needs)

    p = commands.add_parser("run", help="train one job spec into a new versioned artifact folder")
    p.add_argument("spec", type=Path, help="job spec (TOML)")
    p.add_argument("--resume", action="store_true", help="continue the newest unfinished version of this job")
    p.add_argument(
        "--result", type=Path, metavar="FILE", help="write how the run ended here as JSON (what the queue reads)"
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        help="where to train this time (default: the spec's train.device; not part of the job's identity)",
    )
    p.set_defaults(func=cmd_run)

    p = commands.add_parser(
        "evaluate",
        aliases=["fid"],
        help="measure a run with FID, KID and FRD as its spec's [eval] says (its final generator or a checkpoint); "
        "`fid` is the same command",
    )
    p.add_argument("run_dir", type=Path, help="a run folder, e.g. artifacts/wgan_ldim200/v0001")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint file of that run (default: generator.pt)")
    p.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="every kept checkpoint, with the spec's [eval.during] settings (the options below on top): the "
        "metric against the epoch, in metrics.jsonl and metrics.png; the best kept as best.pt",
    )
    p.add_argument("--n", type=_positive_int, help="generated images per repeat (default: the spec's)")
    p.add_argument("--repeats", type=_positive_int, help="measurements, each of new images (default: the spec's)")
    p.add_argument("--dims", type=int, choices=FEATURE_DIMS, help="Inception feature dimensions (default: the spec's)")
    p.add_argument("--batch-size", type=_positive_int, help="images per Inception batch (default: the spec's)")
    p.add_argument("--weights", help="standard | untrained | /path/to/weights.pth")
    p.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        help="generated images to 8 bits: fixed [-1, 1] -> [0, 255], or each image's own min-max as the thesis "
        "did (default: the spec's)",
    )
    p.add_argument("--n-real", type=_positive_int, help="real images used (default: the whole prepared set)")
    p.add_argument("--frd", action=argparse.BooleanOptionalAction, help="FRD too (default: the spec's [eval] frd)")
    p.add_argument("--frd-n", type=_positive_int, help="generated images per repeat FRD measures (default: the spec's)")
    p.add_argument(
        "--save-images",
        type=Path,
        metavar="DIR",
        help="write the real and generated images measured, as PNG, into DIR (a new folder), with the commands "
        "that recompute each number with pytorch-fid's and frd-score's own CLIs",
    )
    p.add_argument("--device", choices=DEVICES, help="where to measure (default: the spec's)")
    p.set_defaults(func=cmd_fid)

    p = commands.add_parser(
        "ladder", help="check that FID, KID and FRD rank image sets of known, decreasing quality in order"
    )
    p.add_argument("prepared", type=Path, help="a prepared set, e.g. data/prepared/phantom64")
    p.add_argument("--metrics", default="fid,kid,frd", help="comma-separated: fid, kid, frd (default all)")
    p.add_argument("--n", type=_positive_int, default=100, help="images per rung (default 100; at most half the set)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("artifacts/ladder"),
        help="folder for ladder.json and ladder.png (default artifacts/ladder, where make run-all puts it)",
    )
    p.add_argument("--weights", default="standard", help="FID/KID Inception: standard | untrained | a path")
    dims_help = "Inception feature dimensions (default 2048)"
    p.add_argument("--dims", type=int, choices=FEATURE_DIMS, default=2048, help=dims_help)
    p.add_argument("--batch-size", type=_positive_int, default=50, help="images per Inception batch (default 50)")
    p.add_argument("--seed", type=int, default=0, help="which half is the reference, and the degradations")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to measure (default: a GPU if any)")
    p.set_defaults(func=cmd_ladder)

    p = commands.add_parser("sweep", help="expand a sweep file into job spec files")
    p.add_argument("file", type=Path, help="sweep file, e.g. jobs/thesis.sweep.toml")
    p.add_argument(
        "--out", type=Path, help="folder for the job files (default: beside the sweep file, named by it: jobs/future)"
    )
    p.add_argument("--dry-run", action="store_true", help="list the job files without writing them")
    p.set_defaults(func=cmd_sweep)

    p = commands.add_parser("enqueue", help="validate job specs and add the good ones to a queue")
    p.add_argument("specs", type=Path, nargs="+", metavar="SPEC", help="job specs (TOML)")
    p.add_argument("--queue", type=Path, default=Path("queue"), help="queue folder (default queue/)")
    p.set_defaults(func=cmd_enqueue)

    p = commands.add_parser("worker", help="run queued jobs one at a time on this machine's device")
    p.add_argument("--queue", type=Path, default=Path("queue"), help="queue folder (default queue/)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--until-empty", action="store_true", help="stop when nothing is pending (default)")
    mode.add_argument("--watch", action="store_true", help="keep waiting for new jobs")
    p.add_argument("--force", action="store_true", help="rerun jobs that already have a finished version")
    p.add_argument("--slot", help="device lock name (default: cuda<N> by CUDA_VISIBLE_DEVICES, or cpu)")
    p.add_argument("--poll", type=_positive_float, default=2.0, help="seconds between looks at pending/ with --watch")
    p.set_defaults(func=cmd_worker)

    p = commands.add_parser("queue", help="queue inspection")
    queue_commands = p.add_subparsers(dest="queue_command", required=True, metavar="COMMAND")
    p = queue_commands.add_parser("status", help="pending, running (progress, heartbeat age), done, failed")
    p.add_argument("--queue", type=Path, default=Path("queue"), help="queue folder (default queue/)")
    p.set_defaults(func=cmd_queue_status)

    p = commands.add_parser(
        "submit", help="run job specs as one Slurm job array through submitit (or its local executor)"
    )
    p.add_argument("specs", type=Path, nargs="*", metavar="SPEC", help="job specs (bad ones are reported, left out)")
    p.add_argument("--executor", choices=("slurm", "local"), default="slurm", help="slurm (default) or local")
    p.add_argument("--partition", help="sbatch --partition")
    p.add_argument(
        "--gpus-per-job",
        type=_count,
        help="sbatch --gres=gpu:N (default: 1, or 0 for CPU-only jobs and on a cluster that lists no GPUs)",
    )
    p.add_argument("--cpus-per-task", type=_positive_int, help="sbatch --cpus-per-task")
    p.add_argument("--mem-gb", type=_positive_int, help="sbatch --mem=<N>GB")
    p.add_argument("--time", help="time limit per task (sbatch --time; default 24:00:00, local 30 days)")
    p.add_argument(
        "--array-parallelism", type=_positive_int, help="tasks at once (sbatch --array=0-N%%P; default all; local 1)"
    )
    p.add_argument("--container", type=Path, metavar="IMAGE.sif", help="run each task in this Apptainer image, --nv")
    p.add_argument("--account", help="sbatch --account")
    p.add_argument("--qos", help="sbatch --qos")
    p.add_argument("--setup", action="append", default=[], metavar="CMD", help="shell line before each task")
    p.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option (KEY alone: a flag)"
    )
    p.add_argument(
        "--signal-delay", type=_positive_int, default=120, help="seconds before the time limit to checkpoint (120)"
    )
    p.add_argument("--max-timeouts", type=_count, default=10, help="time-limit requeues per task (default 10)")
    p.add_argument("--force", action="store_true", help="rerun jobs that already have a finished version")
    p.add_argument("--folder", type=Path, default=Path("submissions"), help="submissions folder (submissions/)")
    p.add_argument("--wait", action="store_true", help="wait for every task; exit non-zero if one did not complete")
    p.add_argument(
        "--status",
        nargs="?",
        const=True,
        metavar="SUBMISSION",
        help="show each task's state and log (default: the newest submission)",
    )
    p.set_defaults(func=cmd_submit)

    p = commands.add_parser("report", help="summarise the runs in an artifacts folder (tables and figures)")
    p.add_argument(
        "artifacts", type=Path, nargs="?", default=Path("artifacts"), help="artifacts folder (default artifacts/)"
    )
    p.add_argument("--jobs", type=Path, help="a folder of job specs: jobs without runs show as missing")
    p.set_defaults(func=cmd_report)

    p = commands.add_parser("validate", help="check job specs; report every bad one")
    p.add_argument("specs", type=Path, nargs="+", metavar="SPEC", help="job specs (TOML)")
    p.set_defaults(func=cmd_validate)

    p = commands.add_parser("show", help="print a job spec resolved with its defaults, and its hash")
    p.add_argument("spec", type=Path, help="a job spec (TOML)")
    p.set_defaults(func=cmd_show)
    return parser


def _os_error_line(exc: OSError) -> str:
    """The path first, then what the system said; for a refused permission, who asked (in a container,
    the uid compose runs it as)."""
    if exc.filename is None or exc.strerror is None:
        return one_line(exc, 300)
    line = f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, PermissionError):
        line += f" (running as uid {os.getuid()}; make the folder writable for it, or run as its owner)"
    return line


def _print_error(exc: HeartjobsError) -> None:
    """One line per problem, each starting with "error:"."""
    for line in str(exc).splitlines():
        err.print(Text.assemble(("error: ", "red"), line), soft_wrap=True)


def _print_traceback(exc: BaseException) -> None:
    """The whole story of an error, causes included: the one-line errors hide them (raise ... from None)
    and this brings them back."""
    seen, link = set(), exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__suppress_context__ = False
        link = link.__cause__ or link.__context__
    traceback.print_exception(exc, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HeartjobsError as exc:
        if args.debug:
            _print_traceback(exc)
        _print_error(exc)
        return exc.exit_code
    except OSError as exc:  # the machine, not the code: a folder this user cannot write, a full disk
        if args.debug:
            _print_traceback(exc)
        _print_error(HeartjobsError(_os_error_line(exc)))
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
