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
    from heartjobs.report.cells import markdown_table
    from heartjobs.report.console import compact
    from heartjobs.report.summary import data_sources, write_report
    from heartjobs.store.rundir import REPORT_PAGE

    warnings: list[str] = []
    rows, written = write_report(args.artifacts, _expected_jobs(args.jobs) if args.jobs else None, warnings)
    # A run folder that cannot be read (foreign, partial) is no reason to withhold the rest of the
    # study: the report is written, each such file is named here, and the exit code stays 0.
    for line in warnings:
        err.print(Text.assemble(("warning: ", "bold yellow"), printable(line)), soft_wrap=True)
    page = next((path for path in written if path.name == REPORT_PAGE), None)
    table = compact(rows, page_written=page is not None, sources=data_sources(rows))
    files = [path for path in written if path != page]
    if out.is_terminal:
        print_table(f"heartjobs summary ({args.artifacts})", table.header, table.rows)
        for line in table.notes:
            out.print(line)
        out.print(f"wrote {len(files)} files into {args.artifacts}: " + ", ".join(p.name for p in files))
    else:  # plain text for logs: the same table in markdown, one line per row, and one line per file
        out.print(markdown_table(table.header, table.rows), end="")
        for line in table.notes:
            out.print(line)
        for path in files:
            out.print(f"wrote {path}")
    if page is not None:  # last: a link a terminal opens
        out.print(f"report: {page.resolve().as_uri()}")


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
