"""The job commands: `run` one spec, `sweep` a sweep file into specs, `validate` and `show` specs; and the
check of a list of specs that `validate`, `enqueue`, `submit` and `data needs` share."""

from __future__ import annotations

import argparse
from pathlib import Path

from heartjobs import atomic
from heartjobs.choices import DEVICES
from heartjobs.cli.output import out, print_error
from heartjobs.errors import HeartjobsError


def add_run(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("run", help="train one job spec into a new versioned artifact folder")
    p.add_argument("spec", type=Path, help="job spec (TOML)")
    p.add_argument("--resume", action="store_true", help="continue the newest unfinished version of this job")
    p.add_argument(
        "--result", type=Path, metavar="FILE", help="write how the run ended here as JSON (what the queue reads)"
    )
    p.add_argument(
        "--defer-evaluation",
        action="store_true",
        help="train only: leave the run 'trained', its measurement to a later --resume (what a queue worker with "
        "--overlap does, to measure one job while the next trains)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        help="where to train this time (default: the spec's train.device; not part of the job's identity)",
    )
    p.set_defaults(func=cmd_run)


def add_sweep(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sweep", help="expand a sweep file into job spec files")
    p.add_argument("file", type=Path, help="sweep file, e.g. jobs/thesis.sweep.toml")
    p.add_argument(
        "--out", type=Path, help="folder for the job files (default: beside the sweep file, named by it: jobs/future)"
    )
    p.add_argument("--dry-run", action="store_true", help="list the job files without writing them")
    p.set_defaults(func=cmd_sweep)


def add_checks(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("validate", help="check job specs; report every bad one")
    p.add_argument("specs", type=Path, nargs="+", metavar="SPEC", help="job specs (TOML)")
    p.set_defaults(func=cmd_validate)

    p = commands.add_parser("show", help="print a job spec resolved with its defaults, and its hash")
    p.add_argument("spec", type=Path, help="a job spec (TOML)")
    p.set_defaults(func=cmd_show)


def cmd_run(args: argparse.Namespace) -> None:
    from heartjobs.runner.lifecycle import run_job
    from heartjobs.store.rundir import RunDir

    if args.result is not None and args.result.is_dir():  # found out now, not after hours of training
        raise HeartjobsError(f"--result {args.result}: is a folder; give a file path")
    from heartjobs.system.cpus import use_allotted_cpus
    from heartjobs.system.launching import die_with_starter
    from heartjobs.system.stopping import stop_on_signals_until_exit

    stop = stop_on_signals_until_exit()  # taken first: a signal during setup is a request, not a death
    die_with_starter()
    use_allotted_cpus()
    run_dir = run_job(
        args.spec,
        resume=args.resume,
        result_file=args.result,
        stop=stop,
        device=args.device,
        defer_evaluation=args.defer_evaluation,
    )
    if stop.signal is not None:  # it came after the job had finished: nothing was stopped
        out.print("a stop signal came after the job had finished; nothing to stop")
    if RunDir(run_dir).status().state == "trained":
        out.print(f"trained: {run_dir}; measure it with: heartjobs run {args.spec} --resume")
    else:
        out.print(f"done: {run_dir}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from heartjobs.spec.sweep import default_jobs_folder, write_jobs

    out_dir = args.out or default_jobs_folder(args.file)
    paths = write_jobs(args.file, out_dir, dry_run=args.dry_run)
    for path in paths:
        out.print(f"{'would write' if args.dry_run else 'wrote'} {path}")
    out.print(f"{len(paths)} jobs")


def cmd_validate(args: argparse.Namespace) -> None:
    good, bad = valid_specs(args.specs)
    for path, spec in good:
        out.print(f"ok: {path} ({spec.model}, {spec.data.size} px, spec hash {spec.spec_hash})")
    fail_if_bad(bad, len(args.specs), "are invalid")


def cmd_show(args: argparse.Namespace) -> None:

    from heartjobs.spec.loading import load_spec

    spec = load_spec(args.spec)
    shown = {"spec_hash": spec.spec_hash, **spec.model_dump(mode="json"), "parameters": _parameter_counts(spec)}
    out.print_json(atomic.dumps_json(shown))


def _parameter_counts(spec) -> dict:
    """The networks' trainable parameters at the spec's image size, counted on the meta device (no memory,
    no initialisation)."""
    import torch

    from heartjobs.models import build_networks, count_parameters

    with torch.device("meta"):
        generator, discriminator = build_networks(spec.networks())
    return {"generator": count_parameters(generator), "discriminator": count_parameters(discriminator)}


def valid_specs(paths: list[Path]) -> tuple[list[tuple[Path, object]], int]:
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
            print_error(exc)
    return good, bad


def fail_if_bad(bad: int, total: int, verdict: str) -> None:
    if bad:
        raise HeartjobsError(f"{bad} of {total} specs {verdict}")
