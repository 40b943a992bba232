"""The measuring commands: `evaluate` (also `fid`) a run or every kept checkpoint, and the validity `ladder`
that checks the metrics rank known degradations in order."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from heartjobs.choices import DEVICES, FEATURE_DIMS, FEATURE_NETWORKS, FRD_BACKENDS, NORMALIZATIONS
from heartjobs.cli.arguments import positive_int
from heartjobs.cli.output import out, print_rows
from heartjobs.errors import HeartjobsError


def add_commands(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--against",
        type=Path,
        metavar="PREPARED",
        help="measure against the real images of another prepared set of the same image size (a held-out "
        "heart) instead of the run's training set; the record names that set and goes to the run's evals/",
    )
    p.add_argument("--n", type=positive_int, help="generated images per repeat (default: the spec's)")
    p.add_argument("--repeats", type=positive_int, help="measurements, each of new images (default: the spec's)")
    p.add_argument("--dims", type=int, choices=FEATURE_DIMS, help="Inception feature dimensions (default: the spec's)")
    p.add_argument("--batch-size", type=positive_int, help="images per Inception batch (default: the spec's)")
    p.add_argument("--weights", help="standard | untrained | /path/to/weights.pth")
    p.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        help="generated images to 8 bits: fixed [-1, 1] -> [0, 255], or each image's own min-max as the thesis "
        "did (default: the spec's)",
    )
    p.add_argument("--n-real", type=positive_int, help="real images used (default: the whole prepared set)")
    p.add_argument("--frd", action=argparse.BooleanOptionalAction, help="FRD too (default: the spec's [eval] frd)")
    p.add_argument("--frd-n", type=positive_int, help="generated images per repeat FRD measures (default: the spec's)")
    p.add_argument(
        "--frd-backend",
        choices=FRD_BACKENDS,
        help="FRD's features by torch (batched, on the device) or by pyradiomics itself (the reference; "
        "default: the spec's)",
    )
    p.add_argument(
        "--frd-drop-degenerate",
        action=argparse.BooleanOptionalAction,
        help="leave out FRD's round-off columns (then not comparable to published FRD v1; default: the spec's)",
    )
    p.add_argument(
        "--features",
        choices=FEATURE_NETWORKS,
        help="the feature network of FID, KID and PRDC: inception, or radimagenet with --weights FILE "
        "(default: the spec's)",
    )
    p.add_argument("--prdc", action=argparse.BooleanOptionalAction, help="precision/recall/density/coverage")
    p.add_argument("--prdc-k", type=positive_int, help="PRDC's nearest neighbours (default: the spec's, 5)")
    p.add_argument("--ms-ssim", action=argparse.BooleanOptionalAction, help="MS-SSIM diversity, generated / real")
    p.add_argument("--ms-ssim-pairs", type=positive_int, help="random pairs per set (default: the spec's, 1000)")
    p.add_argument(
        "--memorisation",
        action=argparse.BooleanOptionalAction,
        help="are training slices returned? (pixels, features, radiomics; default: the spec's)",
    )
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
        "ladder",
        help="check that every metric's numbers rank image sets of known quality as their question says: "
        "degradations (overall, fidelity), half the modes and mode collapse (diversity), training slices "
        "returned (memorisation)",
    )
    p.add_argument("prepared", type=Path, help="a prepared set, e.g. data/prepared/phantom64")
    p.add_argument(
        "--metrics",
        help="comma-separated metrics of the registry: fid, kid, frd, prdc, prdc_radiomics, ms_ssim, "
        "memorisation_pixels, memorisation_inception, memorisation_radiomics (default: all whose feature "
        "space is available here)",
    )
    p.add_argument("--n", type=positive_int, default=100, help="images per rung (default 100; at most half the set)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("artifacts/ladder"),
        help="folder for ladder.json and ladder.png (default artifacts/ladder, where make run-all puts it)",
    )
    p.add_argument(
        "--features",
        choices=FEATURE_NETWORKS,
        default="inception",
        help="the feature network of FID, KID, PRDC and feature memorisation: pytorch-fid's Inception, or "
        "RadImageNet's ResNet-50 from the file --weights names (default inception)",
    )
    p.add_argument(
        "--weights", default="standard", help="Inception: standard | untrained | a path; RadImageNet: its file"
    )
    dims_help = "Inception feature dimensions (default 2048)"
    p.add_argument("--dims", type=int, choices=FEATURE_DIMS, default=2048, help=dims_help)
    p.add_argument("--batch-size", type=positive_int, default=50, help="images per Inception batch (default 50)")
    p.add_argument("--seed", type=int, default=0, help="which half is the reference, and the degradations")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to measure (default: a GPU if any)")
    p.set_defaults(func=cmd_ladder)


# [eval] settings `heartjobs evaluate` replaces, and the option that does
_EVAL_OPTIONS = {
    "n_generated": "--n",
    "repeats": "--repeats",
    "dims": "--dims",
    "batch_size": "--batch-size",
    "weights": "--weights",
    "normalize": "--normalize",
    "n_real": "--n-real",
    "frd": "--frd",
    "frd_n": "--frd-n",
    "frd_backend": "--frd-backend",
    "frd_drop_degenerate": "--frd-drop-degenerate",
    "features": "--features",
    "prdc": "--prdc",
    "prdc_k": "--prdc-k",
    "ms_ssim": "--ms-ssim",
    "ms_ssim_pairs": "--ms-ssim-pairs",
    "memorisation": "--memorisation",
}


def cmd_fid(args: argparse.Namespace) -> None:
    from heartjobs.evaluation.preflight import open_against
    from heartjobs.evaluation.records import summary_line
    from heartjobs.evaluation.runs import evaluate_run, measure_checkpoints
    from heartjobs.spec.loading import overridden
    from heartjobs.store.rundir import RunDir
    from heartjobs.system.cpus import use_allotted_cpus

    use_allotted_cpus()
    spec = RunDir(args.run_dir).spec()
    given = {field: getattr(args, option[2:].replace("-", "_")) for field, option in _EVAL_OPTIONS.items()}
    overrides = {field: value for field, value in given.items() if value is not None}
    settings = overridden(spec.eval, overrides, _EVAL_OPTIONS)  # the spec's bounds hold for options too
    if args.all_checkpoints:
        if args.checkpoint or args.save_images or args.against:
            raise HeartjobsError(
                "--all-checkpoints: measures every kept checkpoint against the run's own set (its curve and "
                "best.pt); leave out --checkpoint, --save-images and --against"
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
    taken = args.save_images is not None and args.save_images.exists()
    if taken and (not args.save_images.is_dir() or any(args.save_images.iterdir())):
        raise HeartjobsError(f"--save-images {args.save_images}: exists and is not an empty folder; give a new one")
    against = open_against(args.against, spec, "--against ") if args.against is not None else None
    report = evaluate_run(
        args.run_dir,
        settings,
        checkpoint=args.checkpoint,
        device=args.device,
        save_images=args.save_images,
        against=against,
    )
    out.print(f"{args.run_dir} ({report.snapshot['file']}, epoch {report.epoch}): {summary_line(report)}")


def cmd_ladder(args: argparse.Namespace) -> None:
    from heartjobs import atomic
    from heartjobs.evaluation.ladder import PASS_RULES, parse_metrics, run_ladder
    from heartjobs.evaluation.metrics import QUESTIONS
    from heartjobs.evaluation.verdicts import remember
    from heartjobs.plots import plot_ladder
    from heartjobs.store.prepared import PreparedSet
    from heartjobs.system.cpus import use_allotted_cpus
    from heartjobs.system.device import resolve_device

    use_allotted_cpus()

    if args.n < 2:
        raise HeartjobsError(f"--n: {args.n} images per rung; FID, KID and FRD need at least 2")
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
        features=args.features,
    )
    network = next((p for p in ladder["protocol"].values() if "standard_weights" in p), None)  # if measured
    title = f"validity ladder: {args.prepared}, n={ladder['n']} per rung"
    if network is not None:
        radimagenet = args.features == "radimagenet"
        title += ", RadImageNet ResNet-50" if radimagenet else f", {network['weights']['kind']} Inception"
    for question, keys, rows in ladder_tables(ladder):
        if not out.is_terminal:  # plain lines: say which column is which
            rows.insert(0, {"rung": "rung", **{k: k for k in keys}})
        print_rows(f"{title}; {question}: {QUESTIONS[question]}", ["rung", *keys], rows)
        out.print(f"{question} passes when {PASS_RULES[question]}; (rung): shown, not judged", soft_wrap=True)
    atomic.write_json(args.out / "ladder.json", ladder)
    plot_ladder(ladder, args.out / "ladder.png")
    remember(ladder, args.out / "ladder.json")  # later measurements on this set carry these verdicts
    out.print(f"wrote {args.out / 'ladder.json'} and {args.out / 'ladder.png'} ({ladder['seconds']:.0f} s)")


def ladder_tables(ladder: dict) -> list[tuple[str, list[str], list[dict]]]:
    """The ladder as one table per question: (question, its number keys, rows): a row per rung (a rung not
    judged for the question in parentheses), a memorisation value with "flagged" where its rule flags it,
    then Spearman's rho and the verdict of each number."""
    tables = []
    for question, judged in ladder["question_rungs"].items():
        keys = [key for key, v in ladder["verdicts"].items() if v["question"] == question]
        if not keys:
            continue
        rows = []
        for rung in ladder["rungs"]:
            name = rung["name"] if rung["name"] in judged else f"({rung['name']})"
            rows.append({"rung": name, **{key: _value(rung, key) for key in keys}})
        verdicts = {key: ladder["verdicts"][key] for key in keys}
        rho = {k: "-" if v["spearman"] is None else f"{v['spearman']:.3f}" for k, v in verdicts.items()}
        rows.append({"rung": "spearman rho", **rho})
        rows.append({"rung": "verdict", **{k: "passes" if v["passes"] else "FAILS" for k, v in verdicts.items()}})
        tables.append((question, keys, rows))
    return tables


def _value(rung: dict, key: str) -> str:
    value = rung.get(key)
    text = "-" if value is None or value != value else f"{value:.4g}"  # NaN: unmeasurable there
    return f"{text} flagged" if rung.get(f"{key}_flag") else text
