"""`heartjobs report`: the summary of an artifacts folder's runs, as a table here and as files."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.text import Text

from heartjobs.cli.output import err, out, print_table
from heartjobs.errors import HeartjobsError, printable


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("report", help="summarise the runs in an artifacts folder (tables and figures)")
    p.add_argument(
        "artifacts", type=Path, nargs="?", default=Path("artifacts"), help="artifacts folder (default artifacts/)"
    )
    p.add_argument("--jobs", type=Path, help="a folder of job specs: jobs without runs show as missing")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> None:
    from heartjobs.report.summary import HEADER, cells, markdown, write_report

    warnings: list[str] = []
    rows, written = write_report(args.artifacts, _expected_jobs(args.jobs) if args.jobs else None, warnings)
    # A run folder that cannot be read (foreign, partial) is no reason to withhold the rest of the
    # study: the report is written, each such file is named here, and the exit code stays 0.
    for line in warnings:
        err.print(Text.assemble(("warning: ", "bold yellow"), printable(line)), soft_wrap=True)
    if out.is_terminal:
        print_table(f"heartjobs summary ({args.artifacts})", HEADER, [cells(row) for row in rows])
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
