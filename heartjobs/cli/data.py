"""`heartjobs data`: make the phantom, prepare a set of slices, summarise a prepared set, and list the sets
job specs need."""

from __future__ import annotations

import argparse
from pathlib import Path

from heartjobs.cli.arguments import positive_int
from heartjobs.cli.jobs import fail_if_bad
from heartjobs.cli.output import out, print_error, print_prepared_set


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="make and prepare CT slice data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = data_commands.add_parser("phantom", help="write the synthetic heart-CT phantom as JPEG 2000 slices")
    p.add_argument("--out", type=Path, default=Path("data/phantom"), help="output folder (default data/phantom)")
    p.add_argument("--slices", type=positive_int, default=200, help="number of slices (default 200)")
    p.add_argument("--size", type=int, default=512, help="slice width and height in px (default 512)")
    p.add_argument("--seed", type=int, default=0, help="anatomy and noise seed (default 0)")
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
    print_prepared_set(Path(args.out), manifest)


def cmd_info(args: argparse.Namespace) -> None:
    from heartjobs.errors import HeartjobsError, one_line
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
