"""The queue commands: `enqueue` job specs, a `worker` that runs them, and `queue status`."""

from __future__ import annotations

import argparse
from pathlib import Path

from heartjobs.cli.arguments import count, positive_float
from heartjobs.cli.jobs import fail_if_bad, valid_specs
from heartjobs.cli.output import out, print_error, print_rows
from heartjobs.errors import HeartjobsError, one_line


def add_commands(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument("--poll", type=positive_float, default=2.0, help="seconds between looks at pending/ with --watch")
    p.add_argument(
        "--overlap",
        type=count,
        default=0,
        metavar="N",
        help="measure up to N trained jobs while the next one trains (each job's measurement in a process of its "
        "own; the job stays in running/ until it is recorded); 0 (default): each job measured before the next",
    )
    p.set_defaults(func=cmd_worker)

    p = commands.add_parser("queue", help="queue inspection")
    queue_commands = p.add_subparsers(dest="queue_command", required=True, metavar="COMMAND")
    p = queue_commands.add_parser("status", help="pending, running (progress, heartbeat age), done, failed")
    p.add_argument("--queue", type=Path, default=Path("queue"), help="queue folder (default queue/)")
    p.set_defaults(func=cmd_queue_status)


def cmd_enqueue(args: argparse.Namespace) -> None:
    from heartjobs.queue.folders import Queue

    queue = Queue(args.queue)  # touches nothing on disk; add() reports a folder it cannot write
    good, bad = valid_specs(args.specs)
    for path, _ in good:
        try:
            out.print(f"queued {path} -> {queue.add(path)}")
        except OSError as exc:  # read-only, full, not a folder
            raise HeartjobsError(f"--queue {args.queue}: cannot add {path} there ({one_line(exc, 200)})") from None
        except HeartjobsError as exc:  # this spec's file name: refused like a bad spec, the others queued
            bad += 1
            print_error(exc)
    fail_if_bad(bad, len(args.specs), "refused; the others are queued")


def cmd_worker(args: argparse.Namespace) -> None:
    from heartjobs.queue.folders import Queue
    from heartjobs.queue.worker import Worker

    try:
        worker = Worker(Queue(args.queue), slot=args.slot, force=args.force, poll_s=args.poll, overlap=args.overlap)
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
    print_rows(f"queue {args.queue}", ["state", "job", "details"], rows)
