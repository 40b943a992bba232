"""`heartjobs submit`: job specs as one Slurm job array through submitit (or its local executor), and a
submission's status."""

from __future__ import annotations

import argparse
from pathlib import Path

from heartjobs.cli.arguments import count, positive_int
from heartjobs.cli.jobs import fail_if_bad, valid_specs
from heartjobs.cli.output import err, out, print_submission_status, print_submitted, status_line
from heartjobs.errors import HeartjobsError


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "submit", help="run job specs as one Slurm job array through submitit (or its local executor)"
    )
    p.add_argument("specs", type=Path, nargs="*", metavar="SPEC", help="job specs (bad ones are reported, left out)")
    p.add_argument("--executor", choices=("slurm", "local"), default="slurm", help="slurm (default) or local")
    p.add_argument("--partition", help="sbatch --partition")
    p.add_argument(
        "--gpus-per-job",
        type=count,
        help="sbatch --gres=gpu:N (default: 1, or 0 for CPU-only jobs and on a cluster that lists no GPUs)",
    )
    p.add_argument("--cpus-per-task", type=positive_int, help="sbatch --cpus-per-task")
    p.add_argument("--mem-gb", type=positive_int, help="sbatch --mem=<N>GB")
    p.add_argument("--time", help="time limit per task (sbatch --time; default 24:00:00, local 30 days)")
    p.add_argument(
        "--array-parallelism", type=positive_int, help="tasks at once (sbatch --array=0-N%%P; default all; local 1)"
    )
    p.add_argument("--container", type=Path, metavar="IMAGE.sif", help="run each task in this Apptainer image, --nv")
    p.add_argument("--account", help="sbatch --account")
    p.add_argument("--qos", help="sbatch --qos")
    p.add_argument("--setup", action="append", default=[], metavar="CMD", help="shell line before each task")
    p.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option (KEY alone: a flag)"
    )
    p.add_argument(
        "--signal-delay", type=positive_int, default=120, help="seconds before the time limit to checkpoint (120)"
    )
    p.add_argument("--max-timeouts", type=count, default=10, help="time-limit requeues per task (default 10)")
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


def cmd_submit(args: argparse.Namespace) -> None:
    from heartjobs.cluster import states, submit
    from heartjobs.cluster.options import refuse_control_characters

    if args.status is not None:
        record = submit.read_submission(args.folder if args.status is True else args.status)
        print_submission_status(record, states.status(record))
        return
    if not args.specs:
        raise HeartjobsError("submit: give job spec files, or --status to see a submission")
    options = _submit_options(args)
    refuse_control_characters("--folder", args.folder.absolute())  # its logs/ path is in the #SBATCH lines
    submit.check_available(options)
    good, bad = valid_specs(args.specs)
    with submit.submitting(args.folder):  # what is held, then what is submitted, decided by one submit at a time
        plan = submit.plan(good, args.folder, force=args.force)
        for note in plan.notes:
            err.print(f"note: {note}")
        for skipped in plan.skipped:
            out.print(f"skipped {skipped['spec']}: {skipped['reason']}")
        if plan.submit:
            options, note = submit.resolve_gpus(options, plan.submit)
            if note:
                err.print(f"note: {note}")
            record, jobs = submit.submit(plan.submit, options, args.folder)
    if plan.submit:
        print_submitted(record, options.executor)
        if args.wait:
            _wait_for_submission(record, jobs)
    else:
        out.print("nothing to submit")
    fail_if_bad(bad, len(args.specs), "refused; the others are submitted" if plan.submit else "refused")


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


def _wait_for_submission(record: dict, jobs: list) -> None:
    """--wait: a line per state change; an error line per task that did not complete."""
    from heartjobs.cluster import states

    rows = states.wait(record, jobs, lambda row: out.print(status_line(row)))
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
