"""`heartjobs data`: make the phantom, prepare a set of slices, list and fetch the Human Organ Atlas' hearts,
summarise a prepared set, and list the sets job specs need."""

from __future__ import annotations

import argparse
from pathlib import Path

from heartjobs.cli.arguments import positive_int
from heartjobs.cli.jobs import fail_if_bad
from heartjobs.cli.output import err, out, print_error, print_prepared_set, print_rows
from heartjobs.data.hoa.inventory import SOURCE_ENV, THESIS_DATASET, dataset_url, datasets, find, pin, resolve_source
from heartjobs.errors import HeartjobsError

MIN_FETCH_SIZE = 8  # px: smaller images are no training set


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="make and prepare CT slice data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = data_commands.add_parser("phantom", help="write the synthetic heart-CT phantom as JPEG 2000 slices")
    p.add_argument("--out", type=Path, default=Path("data/phantom"), help="output folder (default data/phantom)")
    p.add_argument("--slices", type=positive_int, default=200, help="number of slices (default 200)")
    p.add_argument("--size", type=int, default=512, help="slice width and height in px (default 512)")
    p.add_argument("--seed", type=int, default=0, help="anatomy and noise seed (default 0)")
    p.add_argument(
        "--kind",
        choices=("disc", "heart"),
        default="disc",
        help="disc: the first phantom (default); heart: slices of a procedural 3-D heart, closer to the scan",
    )
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.set_defaults(func=cmd_phantom)

    p = data_commands.add_parser("prepare", help="turn a folder of slices into a training set")
    p.add_argument("src", type=Path, help="folder of .jp2/.j2k/.jpx/.png/.tif slices")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/prepared/hipct")
    p.add_argument("--size", type=int, default=256, help="output width and height in px (default 256)")
    p.add_argument("--every", type=positive_int, default=1, help="keep every K-th slice (default 1)")
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
    p.add_argument("--workers", type=positive_int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace an existing set made differently")
    p.set_defaults(func=cmd_prepare)

    p = data_commands.add_parser(
        "datasets", help="the Human Organ Atlas' hearts heartjobs can fetch (default: the complete hearts)"
    )
    p.add_argument("--organ", default="heart", help="the organ (default heart, the only one pinned)")
    p.add_argument("--all", action="store_true", help="every pinned record of the organ, parts (VOIs) too")
    p.set_defaults(func=cmd_datasets)

    p = data_commands.add_parser(
        "fetch", help="fetch a Human Organ Atlas volume (a level of it) into a prepared set, resumably"
    )
    p.add_argument("dataset", help="its inventory name (heartjobs data datasets), e.g. " + THESIS_DATASET)
    p.add_argument("--out", type=Path, help="the prepared set's folder, e.g. data/prepared/hipct")
    p.add_argument(
        "--level",
        type=int,
        help="the pyramid level to read (0 full resolution, each next one 2x coarser; default: from --size)",
    )
    p.add_argument(
        "--size",
        type=int,
        help="output width and height in px (default 256; with --level alone, the level's own width); without "
        "--level, the coarsest level at least this wide is read",
    )
    p.add_argument("--slices", metavar="A:B", help="only the level's slices A to B-1 (default: all)")
    p.add_argument("--every", type=int, default=1, help="keep every K-th slice of the level (default 1)")
    p.add_argument(
        "--source",
        help=f"a mirror keeping the bucket's paths below it: a folder, file:// or http(s):// URL (default "
        f"${SOURCE_ENV}, else the public bucket)",
    )
    p.add_argument(
        "--window",
        choices=("dataset", "percentiles"),
        default="dataset",
        help="16 -> 8 bit conversion: the dataset's published contrast limits where its record has them (no "
        "pinned record has any yet), else the 0.5/99.5 percentiles (default dataset)",
    )
    p.add_argument(
        "--keep-slices",
        action="store_true",
        help="also write the images as 8-bit PNGs (png/), as `data prepare --export-png`",
    )
    p.add_argument("--dry-run", action="store_true", help="print the levels, their sizes and a compressed estimate")
    p.add_argument("--force", action="store_true", help="replace an existing set made differently")
    p.set_defaults(func=cmd_fetch)

    p = data_commands.add_parser("info", help="summarise a prepared set")
    p.add_argument("path", type=Path, help="a prepared set's folder, e.g. data/prepared/phantom64")
    p.set_defaults(func=cmd_info)

    p = data_commands.add_parser(
        "needs", help="the prepared sets job specs train on: one line each, FOLDER<tab>ready|missing"
    )
    p.add_argument("specs", type=Path, nargs="+", metavar="SPEC", help="job specs (TOML)")
    p.set_defaults(func=cmd_needs)


def cmd_phantom(args: argparse.Namespace) -> None:
    from heartjobs.data.phantom import PhantomParams, contact_sheet_path, generate

    params = PhantomParams(slices=args.slices, size=args.size, seed=args.seed, kind=args.kind)
    manifest, made = generate(args.out, params, workers=args.workers, force=args.force)
    verb = "wrote" if made else "up to date:"
    kind = "" if args.kind == "disc" else f"{args.kind}, "
    total = sum(f["bytes"] for f in manifest["files"])
    out.print(
        f"{verb} {args.out}: {len(manifest['files'])} slices {args.size}x{args.size} uint16 jp2 "
        f"({kind}seed {args.seed}, {total / 2**20:.1f} MiB); contact sheet {contact_sheet_path(Path(args.out))}"
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
    print_prepared_set(Path(args.out), manifest)


def cmd_datasets(args: argparse.Namespace) -> None:
    found = datasets(args.organ, complete=None if args.all else True)
    which = f"{args.organ} records" if args.all else f"complete {args.organ}s (--all: every {args.organ} record)"
    pinned = pin()
    title = (
        f"{len(found)} {which} of the Human Organ Atlas ({pinned['source']}, pinned {pinned['pinned']}; "
        f"data licence {pinned['licence']}: cite the DOI)"
    )
    rows = [
        {
            "name": d.name,
            "voxel_um": f"{d.voxel_size_um:g}",
            "shape_xyz": " x ".join(map(str, d.shape_xyz)),
            "format": d.store_format,
            "donor": " ".join(str(d.donor[key]) for key in ("id", "age", "sex") if d.donor.get(key) is not None),
            "doi": d.doi or "",
        }
        for d in found
    ]
    print_rows(title, ["name", "voxel_um", "shape_xyz", "format", "donor", "doi"], rows)


def _slice_range(text: str | None) -> tuple[int, int] | None:
    """--slices A:B, 0 <= A < B."""
    if text is None:
        return None
    first, sep, end = text.partition(":")
    try:
        bounds = (int(first), int(end))
    except ValueError:
        bounds = None
    if not sep or bounds is None or not 0 <= bounds[0] < bounds[1]:
        raise HeartjobsError(
            f"fetch: --slices: expected A:B with 0 <= A < B (the level's slices A to B-1), got {text!r}"
        )
    return bounds


def cmd_fetch(args: argparse.Namespace) -> None:
    if args.level is not None and args.level < 0:
        raise HeartjobsError(f"fetch: --level must be >= 0, got {args.level}")
    if args.size is None and args.level is None:
        args.size = 256  # the thesis' size; with --level alone, the level keeps its own width
    if args.size is not None and args.size < MIN_FETCH_SIZE:
        raise HeartjobsError(f"fetch: --size must be >= {MIN_FETCH_SIZE}, got {args.size}")
    if args.every < 1:
        raise HeartjobsError(f"fetch: --every must be >= 1, got {args.every}")
    slices = _slice_range(args.slices)
    if args.out is None and not args.dry_run:
        raise HeartjobsError("fetch: --out: required (the prepared set's folder), except with --dry-run")
    dataset = find(args.dataset)
    # the reader and the fetch engine (tensorstore) only once the arguments are known to be good
    from heartjobs.data.hoa import fetch as fetching
    from heartjobs.data.hoa.volume import open_volume
    from heartjobs.store.prepared import PreparedSet

    params = fetching.FetchParams(
        level=args.level,
        size=args.size,
        slices=slices,
        every=args.every,
        window=args.window,
        keep_slices=args.keep_slices,
        force=args.force,
    )
    if not args.dry_run and fetching.asked_before(args.out, dataset, params):  # no source needed (offline)
        out.print(f"up to date: {args.out} holds {dataset.name} as asked")
        return
    source = resolve_source(args.source)
    if args.dry_run:
        err.print(
            f"reading {dataset_url(dataset, source)} (errors are retried for up to about 2.5 minutes per request)"
        )
        volume = open_volume(dataset_url(dataset, source), dataset.store_format)
        rows = fetching.level_table(dataset, volume)
        columns = list(rows[0]) if rows else []
        title = f"{dataset.name} at {dataset_url(dataset, source)}: its levels ({', '.join(columns)})"
        print_rows(title, columns, rows)
        chosen = fetching.plan(dataset, volume, params)
        ratio = fetching.estimate_compressed(volume, chosen.level.index)
        estimate = "unknown (no block could be sampled)" if ratio is None else f"about {ratio:.0%} of the raw bytes"
        out.print(
            f"this fetch: level {chosen.level.index}, {len(chosen.picks)} slices of {chosen.slices[0]}:"
            f"{chosen.slices[1]} to {chosen.size} px; reads {chosen.blocks} blocks, {chosen.bytes_to_read} bytes raw; "
            f"stored compressed: {estimate} (from sampled blocks)"
        )
        return
    path = fetching.fetch(dataset, source, args.out, params)
    out.print(f"fetched {dataset.name} into {path}")
    print_prepared_set(Path(path), PreparedSet.open(path).manifest)
    out.print(f"licence {dataset.licence}: cite doi:{dataset.doi} ({dataset.citation})")


def cmd_info(args: argparse.Namespace) -> None:
    from heartjobs.errors import one_line
    from heartjobs.store.prepared import MANIFEST_FILE, PreparedSet

    prepared = PreparedSet.open(args.path)
    manifest = prepared.path / MANIFEST_FILE
    try:  # the fields training needs are checked on opening; those only shown here are not
        print_prepared_set(prepared.path, prepared.manifest)
    except KeyError as exc:
        raise HeartjobsError(f"{manifest}: {exc.args[0]}: missing") from None
    except (TypeError, IndexError, ValueError, AttributeError) as exc:
        raise HeartjobsError(f"{manifest}: not what heartjobs writes ({one_line(exc, 160)})") from None


def cmd_needs(args: argparse.Namespace) -> None:
    from heartjobs.data.needs import needed_sets

    sets, errors = needed_sets(args.specs)
    for exc in errors:
        print_error(exc)
    for folder, ready in sets:
        print(f"{folder}\t{'ready' if ready else 'missing'}")  # plain print: tab-separated for scripts
    fail_if_bad(len(errors), len(args.specs), "are invalid")
