"""What the `heartjobs` command prints: its two consoles, tables or tab-separated rows, one-line errors, a
prepared set's summary and a submission's tasks. No argument parsing here."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from heartjobs.errors import HeartjobsError, printable
from heartjobs.progress import PlainConsole

# what heartjobs prints holds user text (paths, job names, errors): no markup, no raw control characters
out = PlainConsole(highlight=False)
err = PlainConsole(stderr=True, highlight=False)  # soft wrap: long notes stay one line each


def print_error(exc: HeartjobsError) -> None:
    """One line per problem, each starting with "error:", with no control character left raw (a hostile file
    name or value must not drive the terminal)."""
    for line in str(exc).rstrip("\n").split("\n"):  # the problems' separator; every other line break is escaped
        err.print(Text.assemble(("error: ", "red"), printable(line)), soft_wrap=True)


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table of text cells (control characters escaped: rich's cells would print them raw)."""
    table = Table(title=printable(title))
    cells = [[printable(str(cell)) for cell in row] for row in rows]
    # the first column names the row (a job, a dataset to fetch): kept whole, to be read and copied; the
    # others fold where the console is narrow, never cut to "…"
    first = max((len(row[0]) for row in cells if row), default=0)
    for index, column in enumerate(columns):
        table.add_column(column, overflow="fold", min_width=first if index == 0 else None)
    for row in cells:
        table.add_row(*row)
    out.print(table)


def print_rows(title: str, columns: list[str], rows: list[dict]) -> None:
    """A table on a terminal; otherwise a title line and one tab-separated line per row (for logs, grep)."""
    if not out.is_terminal:
        print(printable(title))  # plain print: rich would expand the tabs
        for row in rows:
            print("\t".join(printable(str(row.get(c, ""))) for c in columns))
        return
    print_table(title, columns, [[str(row.get(c, "")) for c in columns] for row in rows])


def print_prepared_set(path: Path, manifest: dict) -> None:
    """A prepared set's summary: its images, where they came from and how they were made; a fetched set's
    dataset, citation, licence, level and source too. Every value is from the manifest, escaped."""
    window = manifest["window"]
    rows = [
        (
            "images",
            f"{manifest['count']} x {manifest['shape'][1]} x {manifest['shape'][2]} x "
            f"{manifest['shape'][3]} {manifest['dtype']}",
        ),
        (
            "source",
            f"{manifest['source']} ({len(manifest['sources'])} slices, "
            f"{manifest['source_shape'][0]}x{manifest['source_shape'][1]}, {window['source_bits']}-bit)",
        ),
        ("every", str(manifest["parameters"]["every"])),
        ("window", _window_line(window)),
    ]
    if window.get("assumption"):  # sets made before the manifest said so lack it
        rows.append(("assumption", window["assumption"]))
    rows.append(("skipped", ", ".join(s["name"] for s in manifest["skipped"]) or "none"))
    rows.append(("content hash", manifest["content_hash"][:16]))
    rows.append(("contact sheet", str(path / "contact_sheet.png")))
    if manifest.get("png"):
        rows.append(("png", str(path / manifest["png"])))
    rows += _provenance_rows(manifest.get("provenance"))
    table = Table(title=printable(f"prepared set {path}"), show_header=False)
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")  # a source URL folds, never cut to "…"
    for name, value in rows:
        table.add_row(name, printable(str(value)))
    out.print(table)


def _provenance_rows(provenance: dict | None) -> list[tuple[str, str]]:
    """Where a fetched set's volume came from (`data fetch` records it): the dataset, how to cite it, the
    level read and the source; none for a set prepared from slices."""
    if not provenance:
        return []
    donor = provenance.get("donor") or {}
    scan = provenance.get("scan") or {}
    sample = f"{provenance.get('organ')} ({provenance.get('voi')}), {provenance.get('voxel_size_um')} um"
    sample += "; donor " + " ".join(str(donor[k]) for k in ("id", "age", "sex") if donor.get(k) is not None)
    if scan.get("date"):
        sample += f"; scanned {scan['date']} on {scan.get('beamline')}"
    rows = [
        ("dataset", str(provenance.get("name"))),
        ("sample", sample),
        ("doi", f"https://doi.org/{provenance['doi']}" if provenance.get("doi") else "none recorded"),
        ("citation", str(provenance.get("citation"))),
        ("licence", str(provenance.get("licence"))),
    ]
    if "level" in provenance:
        level = f"{provenance['level']} of the {provenance.get('store_format')} pyramid"
        for key, label in (("level_shape", "shape"), ("block_size", "blocks")):
            if isinstance(provenance.get(key), list):
                level += f", {label} {' x '.join(map(str, provenance[key]))}"
        rows.append(("level", level))
    if provenance.get("source"):
        rows.append(("fetched from", str(provenance["source"])))
    return rows


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


def print_submitted(record: dict, executor: str) -> None:
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


def print_submission_status(record: dict, rows: list[dict]) -> None:
    title = f"submission {record['folder']} ({record['executor']}, {record['created']})"
    print_rows(title, ["index", "job", "job_id", "state", "run", "log"], rows)


def status_line(row: dict) -> str:
    """A submitted task's state, one line (what --wait prints at each change)."""
    return f"{row['index']:3d} {row['job']} {row['job_id']}: {row['state']}  run {row['run']}"
