"""The report's figures, from its rows and configurations (summary.py, configurations.py): one row of the
real grid and each model's best sample grid (for a README's first screen), each model's best sample grid
beside the real grid (the thesis' Figure 2), each metric against each varied hyperparameter with error bars
over seeds, the loss curves of every configuration of a model overlaid (as the thesis' own plotting code
did), and each metric (precision and recall too: fidelity and diversity apart) against the training epoch
where checkpoints were measured during or after training. Written as PNG into the artifacts folder; a figure
without data to show is not written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heartjobs.plots import save_figure
from heartjobs.spec.sweep import abbreviation, format_value
from heartjobs.store.rundir import REPORT_FIGURE, RunDir

OVERVIEW = REPORT_FIGURE.format(what="overview")
BEST_GRIDS = REPORT_FIGURE.format(what="best_grids")
METRICS_VS_HYPERPARAMETERS = REPORT_FIGURE.format(what="fid_vs_hyperparameters")
LOSSES = REPORT_FIGURE.format(what="losses_{model}")
METRICS_VS_EPOCH = REPORT_FIGURE.format(what="metrics_vs_epoch")
LOG_SCALE = ("lr", "batchnorm_eps")  # spaced by factors, not steps


def figures(root: Path, rows: list[dict], configs: list[dict], best: list[dict]) -> list[Path]:
    """The figures that have data to show; `best`: each model's best run (report.summary.best_runs)."""
    import matplotlib

    matplotlib.use("Agg")
    # Labels and titles hold names and values from run folders made elsewhere: "$...$" in one is text,
    # not mathtext (which fails on a symbol it does not know).
    with matplotlib.rc_context({"text.parse_math": False}):
        made = [
            _overview(root / OVERVIEW, best) if best else None,
            _best_grids(root / BEST_GRIDS, best) if best else None,
            _metrics_vs_hyperparameters(root / METRICS_VS_HYPERPARAMETERS, configs),
            *(_losses(root / LOSSES.format(model=model), model, rows, configs) for model in _models(rows)),
            _metrics_vs_epoch(root / METRICS_VS_EPOCH, rows, configs),
        ]
    return [path for path in made if path is not None]


def _models(rows: list[dict]) -> list[str]:
    """The models of the rows that heartjobs knows (a loss figure's file is named by its model)."""
    from heartjobs.models import MODELS

    return list(dict.fromkeys(r["model"] for r in rows if r["model"] in MODELS))


def _overview(path: Path, best: list[dict]) -> Path | None:
    """One row: the real grid (the first best run's), then each model's best run's last sample grid, titled
    short (model, epochs, the metric it was ranked by, what it was flagged for)."""
    import matplotlib.pyplot as plt

    panels = [(RunDir(best[0]["run_dir"]) / RunDir.REAL_GRID, "real slices")]
    for r in best:
        samples = RunDir(r["run_dir"]).sample_grids()
        title = str(r["model"]).upper() + (f", {r['epochs']} epochs" if r.get("epochs") is not None else "")
        title += f", {r['by'].upper()} " + (f"{r['value']:.4f}" if r["by"] == "kid" else f"{r['value']:.1f}")
        if r["concerns"]:  # "collapsed: recall 0.05 < 0.25, ..." -> "collapsed"
            title += "\n" + ", ".join(concern.split(":")[0] for concern in r["concerns"])
        panels.append((samples[-1] if samples else None, title))
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4), squeeze=False)
    for ax, (image, title) in zip(axes[0], panels, strict=True):
        _show_grid(ax, image, title)
    # fixed margins: tight_layout placed two-line titles above the figure (the grids keep their aspect)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.86, wspace=0.05)
    save_figure(fig, path, dpi=100)
    return path


def _show_grid(ax, image: Path | None, title: str) -> None:
    """A sample grid on `ax` under `title`, axis off; a missing grid leaves the panel blank, a damaged PNG
    says so in the title instead of failing the figure."""
    from PIL import Image

    ax.axis("off")
    ax.set_title(title, fontsize=9)
    if image and image.is_file():
        try:
            with Image.open(image) as opened:
                ax.imshow(opened, cmap="gray", vmin=0, vmax=255)
        except (OSError, ValueError):
            ax.set_title(f"{title} ({image.name} unreadable)", fontsize=9)


def _best_grids(path: Path, best: list[dict]) -> Path | None:
    """Each model's best run: its last sample grid beside the real grid (the thesis' Figure 2), its title
    naming what it was flagged for (collapsed, memorised)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(best), 2, figsize=(8, 4 * len(best)), squeeze=False)
    for ax_row, r in zip(axes, best, strict=True):
        run = RunDir(r["run_dir"])
        samples = run.sample_grids()
        metric = r["by"].upper()
        title = f"{r['model']} best by {metric}: {r['configuration']}, {metric} {r['value']:.2f}"
        if r["concerns"]:
            title += "\n" + "; ".join(r["concerns"])
        _show_grid(ax_row[0], samples[-1] if samples else None, title)
        _show_grid(ax_row[1], run / RunDir.REAL_GRID, "real")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def hyperparameter_series(configs: list[dict]) -> list[tuple[str, str, list[tuple[object, dict]]]]:
    """(model, key, [(value, configuration)]) for every set of two or more measured configurations that
    differ in `key` alone (same model, data and measurement, the same other hyperparameters); a
    configuration that leaves `key` at the model's default stands at the default's value."""
    from heartjobs.models import MODELS
    from heartjobs.spec.defaults import ARCHITECTURE_DEFAULTS, train_defaults

    keys = list(dict.fromkeys(k for c in configs for k in c["changes"]))
    series = []
    for key in keys:
        groups: dict[tuple, list] = {}
        for c in configs:
            if c["n"] == 0 or c["model"] not in MODELS:
                continue
            rest = json.dumps({k: v for k, v in c["changes"].items() if k != key}, sort_keys=True)
            default = (train_defaults(c["model"]) | ARCHITECTURE_DEFAULTS).get(key)
            groups.setdefault((c["model"], c["context"], rest), []).append((c["changes"].get(key, default), c))
        for (model, _, _), points in groups.items():
            if len({json.dumps(v) for v, _ in points}) > 1 and all(v is not None for v, _ in points):
                series.append((model, key, points))
    return series


def _sort_key(value) -> tuple:
    return (0, value, "") if isinstance(value, int | float) else (1, 0, json.dumps(value))


def _metrics_vs_hyperparameters(path: Path, configs: list[dict]) -> Path | None:
    """Per model and varied hyperparameter, FID (top) and FRD (bottom) against its value: each
    configuration's mean over its runs, with its 95 % interval over seeds where every point has two runs
    or more, else the std over FID repeats of its one run."""
    import matplotlib.pyplot as plt

    panels = hyperparameter_series(configs)
    if not panels:
        return None
    metrics = [m for m in ("fid", "frd") if any(c[m] for c in configs)]
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(3.4 * len(panels), 3 * len(metrics)), squeeze=False)
    for column, (model, key, points) in enumerate(panels):
        points = sorted(points, key=lambda p: _sort_key(p[0]))
        numeric = all(isinstance(v, int | float) for v, _ in points)
        for row, metric in enumerate(metrics):
            ax = axes[row][column]
            shown = [(v, c) for v, c in points if c[metric]]
            if not shown:
                ax.axis("off")
                continue
            over_seeds = all(c[metric]["n"] > 1 for _, c in shown)
            xs = [v for v, _ in shown] if numeric else list(range(len(shown)))
            ys = [c[metric]["mean"] for _, c in shown]
            if over_seeds:
                errors = [c[metric]["ci95"][1] - c[metric]["mean"] for _, c in shown]
            else:
                errors = [_repeats_std(c, metric) for _, c in shown]
            ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3)
            if not numeric:
                ax.set_xticks(xs, [format_value(v) for v, _ in shown], rotation=20, fontsize=7)
            elif key in LOG_SCALE:
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # the minor ticks' labels overlap
            bars = "95 % CI over seeds" if over_seeds else "std over FID repeats"
            ax.set_title(f"{model}: {metric.upper()} vs {abbreviation(key)}\n(bars: {bars})", fontsize=8)
            ax.set_xlabel(key)
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def _repeats_std(config: dict, metric: str) -> float:
    """The std over FID repeats of a configuration's one run (0 when unknown)."""
    run = config["runs"][0]
    report = RunDir(run["run_dir"]).fid_report()
    try:
        return float(report.fid_std if metric == "fid" else getattr(report, metric)["std"])
    except (AttributeError, KeyError, TypeError, ValueError):  # not measured, or not this metric
        return 0.0


def _mean_curve(runs: list[dict], key: str, read) -> tuple[list[int], list[float]]:
    """The mean over runs of `key` per epoch, over the epochs every run has."""
    per_run = []
    for run in runs:
        per_run.append({r["epoch"]: r[key] for r in read(RunDir(run["run_dir"])) if r.get(key) is not None})
    common = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    return common, [float(np.mean([p[e] for p in per_run])) for e in common]


def _losses(path: Path, model: str, rows: list[dict], configs: list[dict]) -> Path | None:
    """A model's configurations overlaid: D loss (left) and G loss (right) per epoch, each configuration's
    mean over its runs; none for a model with one run (its own losses.png shows that)."""
    import matplotlib.pyplot as plt

    mine = [c for c in configs if c["model"] == model and c["runs"]]
    if sum(c["n"] for c in mine) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    drawn = False
    for c in mine:
        for ax, key in zip(axes[0], ("d_loss", "g_loss"), strict=True):
            epochs, values = _mean_curve(c["runs"], key, RunDir.losses)
            if epochs:
                ax.plot(epochs, values, label=f"{c['configuration']} (n={c['n']})")
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, key in zip(axes[0], ("D loss", "G loss"), strict=True):
        ax.set_title(f"{model}: average {key} per epoch, mean over seeds", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def _metrics_vs_epoch(path: Path, rows: list[dict], configs: list[dict]) -> Path | None:
    """FID and FRD against the epoch of the measured checkpoint, a line per run (configuration and seed),
    the best epoch of each marked; beside them, where measured, precision (fidelity) and recall (diversity)
    in the feature network's space, which FID and FRD fold into one number."""
    import matplotlib.pyplot as plt

    curves = [(c, run, RunDir(run["run_dir"]).metric_curve()) for c in configs for run in c["runs"]]
    curves = [(c, run, curve) for c, run, curve in curves if curve]
    if not curves:
        return None

    def measured(metric: str) -> bool:
        return any(v is not None for _, _, curve in curves for v in curve[metric])

    metrics = [m for m in ("fid", "frd") if measured(m)]
    prdc = measured("precision") or measured("recall")
    panels = len(metrics) + prdc
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    if prdc:
        _precision_recall(axes[0][-1], curves)
    for ax, metric in zip(axes[0], metrics, strict=False):
        for index, (c, run, curve) in enumerate(curves):
            points = [(e, v) for e, v in zip(curve["epochs"], curve[metric], strict=True) if v is not None]
            if not points:
                continue
            epochs, values = zip(*points, strict=True)
            colour = _run_colour(index)
            ax.plot(epochs, values, marker=".", color=colour, label=f"{c['model']} {c['configuration']} s{run['seed']}")
            best = int(np.argmin(values))
            ax.plot([epochs[best]], [values[best]], marker="*", markersize=12, color=colour)
        ax.set_title(f"{metric.upper()} vs epoch (★ best epoch of each run)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def _precision_recall(ax, curves: list[tuple[dict, dict, dict]]) -> None:
    """Precision (solid) and recall (dashed) against the epoch, one colour per run: fidelity and diversity
    apart, where FID mixes them."""
    for index, (c, run, curve) in enumerate(curves):
        label = f"{c['model']} {c['configuration']} s{run['seed']}"
        for metric, style in (("precision", "-"), ("recall", "--")):
            points = [(e, v) for e, v in zip(curve["epochs"], curve[metric], strict=True) if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker=".", color=_run_colour(index), label=label)
                label = None  # one legend entry per run
    ax.set_title("precision (fidelity) and recall (diversity) vs epoch\n(solid: precision, dashed: recall)", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def _run_colour(index: int) -> str:
    """The colour of the `index`-th run in every panel of a figure (matplotlib's default cycle), so a run
    keeps its colour where another run has no points."""
    return f"C{index % 10}"
