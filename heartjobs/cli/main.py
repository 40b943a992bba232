"""The `heartjobs` command: its top-level parser (the command groups are added by their modules), the
dispatch to a command, and what an error prints (one line; --debug: the traceback too)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from heartjobs import __version__
from heartjobs.cli import cluster, data, jobs, measure, queue, report
from heartjobs.cli.output import err, print_error
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
    # in the order --help lists them
    data.add_commands(commands)  # data phantom | prepare | info | needs
    jobs.add_run(commands)  # run
    measure.add_commands(commands)  # evaluate (fid), ladder
    jobs.add_sweep(commands)  # sweep
    queue.add_commands(commands)  # enqueue, worker, queue status
    cluster.add_commands(commands)  # submit
    report.add_commands(commands)  # report
    jobs.add_checks(commands)  # validate, show
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
        print_error(exc)
        return exc.exit_code
    except OSError as exc:  # the machine, not the code: a folder this user cannot write, a full disk
        if args.debug:
            _print_traceback(exc)
        print_error(HeartjobsError(_os_error_line(exc)))
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
