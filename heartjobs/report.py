"""The study's summary: one row per job from its newest run folder, beside the thesis' Table 1.

It only reads artifacts. It writes summary.md, summary.csv and summary.json into the artifacts folder,
plus two figures: each model's best sample grid next to the real grid (the thesis' Figure 2), and FID
against each varied hyperparameter per model.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

from heartjobs import artifacts, atomic
from heartjobs.spec import COMMON_DEFAULTS, THESIS_DEFAULTS
from heartjobs.sweep import ABBREVIATIONS, format_value

# Thesis Table 1: FID mean and std (3 x 3000 generated vs 3307 real, pytorch-fid 0.3.0, 2048-d).
THESIS_TABLE1: dict[tuple[str, str], tuple[float, float]] = {
    ("gan", "default"): (269.07, 1.06),
    ("gan", "lr = 0.0001"): (244.37, 0.25),
    ("gan", "lr = 0.0004"): (259.44, 0.28),
    ("gan", "ldim = 50"): (253.99, 0.56),
    ("gan", "ldim = 200"): (262.43, 0.99),
    ("gan", "bsize = 32"): (257.86, 0.93),
    ("gan", "bsize = 128"): (276.69, 0.66),
    ("wgan", "default"): (261.56, 1.17),
    ("wgan", "lr = 0.000025"): (276.18, 1.21),
    ("wgan", "lr = 0.0001"): (252.65, 2.30),
    ("wgan", "ldim = 50"): (318.75, 0.97),
    ("wgan", "ldim = 200"): (253.06, 1.17),
    ("wgan", "bsize = 32"): (298.14, 1.46),
    ("wgan", "bsize = 128"): (281.27, 0.84),
    ("dcgan", "default"): (288.91, 1.39),
    ("dcgan", "lr = 0.0001"): (219.83, 0.63),
    ("dcgan", "lr = 0.0004"): (247.57, 0.84),
    ("dcgan", "ldim = 50"): (261.62, 0.63),
    ("dcgan", "ldim = 200"): (326.15, 0.77),
    ("dcgan", "bsize = 16"): (210.96, 0.55),
    ("dcgan", "bsize = 32"): (370.87, 0.74),
}
THESIS_KEYS = ("lr", "latent_dim", "batch_size")
# Values that say how a run is bookkept, not what it trains.
_NOT_CONFIGURATION = {"sample_every", "checkpoint_every", "keep_checkpoints", "device", "optimizer"}
COLUMNS = [
    "job", "model", "configuration", "state", "fid_mean", "fid_std", "kid_mean", "epochs",
    "train_seconds", "images_per_s", "standard_weights", "n_generated", "thesis_fid", "thesis_fid_std", "run_dir",
]  # fmt: skip


def differences(model: str, train: dict) -> dict:
    """Training values that differ from the model's thesis defaults."""
    defaults = COMMON_DEFAULTS | THESIS_DEFAULTS[model]
    return {
        k: v
        for k, v in train.items()
        if k not in _NOT_CONFIGURATION and v is not None and k in defaults and _differs(defaults[k], v)
    }


def _differs(default, value) -> bool:
    if isinstance(default, tuple | list):
        return list(default) != list(value)
    return default != value


def label(changes: dict) -> str:
    """The thesis' way of naming a configuration: "default", "lr = 0.0001", "bsize = 16"."""
    if not changes:
        return "default"
    return ", ".join(f"{ABBREVIATIONS.get(k, k)} = {format_value(v)}" for k, v in changes.items())


def _row(job: str, run_dir: Path | None) -> dict:
    row = dict.fromkeys(COLUMNS)
    row["job"] = job
    if run_dir is None:
        row["state"] = "missing"
        return row
    spec = atomic.read_json(run_dir / "resolved.json").get("spec", {})
    status = artifacts.read_status(run_dir)
    model, train = spec.get("model"), spec.get("train", {})
    row.update(run_dir=str(run_dir), model=model, state=status.get("state", "unknown"))
    if model in THESIS_DEFAULTS:
        changes = differences(model, train)
        row["configuration"] = label(changes)
        # Only a run of the thesis' own configuration (200 epochs, one thesis hyperparameter) compares.
        thesis = THESIS_TABLE1.get((model, row["configuration"])) if set(changes) <= set(THESIS_KEYS) else None
        if thesis:
            row["thesis_fid"], row["thesis_fid_std"] = thesis
    losses = []
    for line in _lines(run_dir / "losses.jsonl"):
        with contextlib.suppress(ValueError):  # a line cut short by a crash
            losses.append(json.loads(line))
    if losses:
        row["epochs"] = losses[-1]["epoch"]
        row["train_seconds"] = round(sum(e["seconds"] for e in losses), 2)
        row["images_per_s"] = round(sum(e["images_per_s"] for e in losses) / len(losses), 1)
    fid = atomic.read_json(run_dir / "fid.json")
    if fid:
        row.update(
            fid_mean=round(fid["fid_mean"], 3),
            fid_std=round(fid["fid_std"], 3),
            kid_mean=round(fid["kid_mean"], 5) if "kid_mean" in fid else None,
            standard_weights=fid["standard_weights"],
            n_generated=fid["n_generated"],
        )
    return row


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def collect(root: Path, expected: list[str] | None = None) -> list[dict]:
    """One row per job: its newest run folder; jobs in `expected` without one show as missing."""
    root = Path(root)
    jobs = sorted(p.name for p in root.iterdir() if p.is_dir() and artifacts.versions(p)) if root.is_dir() else []
    names = list(expected or []) + [j for j in jobs if j not in (expected or [])]
    rows = []
    for name in names:
        versions = artifacts.versions(root / name)
        rows.append(_row(name, versions[-1] if versions else None))
    return rows


def _fmt_fid(mean, std) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f}"


def markdown(rows: list[dict]) -> str:
    head = (
        "| job | model | configuration | state | FID | KID | epochs | train s | img/s | standard weights | thesis FID |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [
            r["job"], r["model"] or "-", r["configuration"] or "-", r["state"], _fmt_fid(r["fid_mean"], r["fid_std"]),
            "-" if r["kid_mean"] is None else f"{r['kid_mean']:.4f}", r["epochs"] or "-", r["train_seconds"] or "-",
            r["images_per_s"] or "-", {True: "yes", False: "no", None: "-"}[r["standard_weights"]],
            _fmt_fid(r["thesis_fid"], r["thesis_fid_std"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(root: Path, expected: list[str] | None = None) -> tuple[list[dict], list[Path]]:
    """Write summary.md/.csv/.json and the figures into `root`; returns the rows and the files written."""
    root = Path(root)
    rows = collect(root, expected)
    written = [root / "summary.md", root / "summary.csv", root / "summary.json"]
    note = (
        "FID: mean ± std over repeats. Rows whose weights are not standard used an untrained Inception: "
        "their FID is not comparable to the thesis' values.\n\n"
    )
    atomic.write_bytes(written[0], ("# heartjobs summary\n\n" + note + markdown(rows)).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_bytes(written[1], buf.getvalue().encode())
    atomic.write_json(written[2], {"rows": rows})
    written += _figures(root, rows)
    return rows, written


def _figures(root: Path, rows: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    written = []
    measured = [r for r in rows if r["fid_mean"] is not None]
    best = {}
    for r in measured:
        if r["model"] not in best or r["fid_mean"] < best[r["model"]]["fid_mean"]:
            best[r["model"]] = r
    if best:
        fig, axes = plt.subplots(len(best), 2, figsize=(8, 4 * len(best)), squeeze=False)
        for ax_row, (model, r) in zip(axes, sorted(best.items()), strict=True):
            run_dir = Path(r["run_dir"])
            samples = sorted((run_dir / "samples").glob("epoch_*.png"))
            title = f"{model} best: {r['configuration']}, FID {r['fid_mean']:.1f}"
            for ax, path, text in (
                (ax_row[0], samples[-1] if samples else None, title),
                (ax_row[1], run_dir / "real.png", "real"),
            ):
                ax.axis("off")
                ax.set_title(text, fontsize=9)
                if path and path.is_file():
                    ax.imshow(Image.open(path), cmap="gray", vmin=0, vmax=255)
        fig.tight_layout()
        written.append(_save(fig, root / "report_best_grids.png"))
        plt.close(fig)

    panels = []
    for model in sorted({r["model"] for r in measured}):
        runs = [r for r in measured if r["model"] == model]
        for key in THESIS_KEYS:
            short = ABBREVIATIONS[key]
            points = []
            for r in runs:
                spec = atomic.read_json(Path(r["run_dir"]) / "resolved.json").get("spec", {})
                changes = differences(model, spec.get("train", {}))
                if set(changes) <= {key, "epochs"}:
                    points.append((spec["train"][key], r["fid_mean"], r["fid_std"]))
            if len(points) > 1:
                panels.append((model, short, key, sorted(points)))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
        for ax, (model, short, key, points) in zip(axes[0], panels, strict=True):
            xs, ys, es = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3)
            if key == "lr":
                ax.set_xscale("log")
            ax.set_title(f"{model}: FID vs {short}", fontsize=9)
            ax.set_xlabel(key)
            ax.set_ylabel("FID")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, root / "report_fid_vs_hyperparameters.png"))
        plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic.write_bytes(path, buf.getvalue())
    return path
