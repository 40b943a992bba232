"""Plots saved as PNG with matplotlib (headless)."""

from __future__ import annotations

import io
from pathlib import Path

from heartjobs import atomic


def save_figure(fig, path: Path, dpi: float | None = None) -> Path:
    """A finished matplotlib figure as PNG at `path`, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **({"dpi": dpi} if dpi else {}))
    plt.close(fig)
    atomic.write_bytes(Path(path), buf.getvalue())
    return Path(path)


def plot_losses(history: list[dict], path: Path, title: str) -> None:
    """Average D and G loss per epoch (the thesis' Figure 1), saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(epochs, [h["d_loss"] for h in history], label="D loss")
    ax.plot(epochs, [h["g_loss"] for h in history], label="G loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("average loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_ladder(ladder: dict, path: Path) -> None:
    """Each metric's value per rung of the validity ladder, scaled to its own 0..1 range so that all fit
    one axis; a metric that passes rises from left to right. Saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = [r["name"] for r in ladder["rungs"]]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for metric in ladder["metrics"]:
        series = [r[metric] for r in ladder["rungs"]]
        low, high = min(series), max(series)
        scaled = [(v - low) / (high - low) if high > low else 0.0 for v in series]
        verdict = ladder["verdicts"][metric]
        rho = "-" if verdict["spearman"] is None else f"{verdict['spearman']:.2f}"
        label = f"{metric} (rho {rho}, {'passes' if verdict['passes'] else 'FAILS'})"
        ax.plot(range(len(rungs)), scaled, marker="o", label=label)
    ax.set_xticks(range(len(rungs)), rungs, rotation=30, ha="right")
    ax.set_ylabel("value, scaled to the metric's range")
    ax.set_title(f"validity ladder: {Path(ladder['prepared']).name}, n={ladder['n']} per rung")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_metric_curve(curve: dict, path: Path, title: str) -> None:
    """FID (and FRD where measured) against the epoch of the measured checkpoint (RunDir.metric_curve), the
    best epoch marked; saved atomically beside the loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("fid", "frd") if any(v is not None for v in curve[m])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), dpi=100, squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        points = [(e, v) for e, v in zip(curve["epochs"], curve[metric], strict=True) if v is not None]
        ax.plot(*zip(*points, strict=True), marker="o")
        if metric == curve.get("best_by") and curve.get("best_epoch") is not None:
            best = curve["epochs"].index(curve["best_epoch"])
            ax.plot([curve["best_epoch"]], [curve[metric][best]], marker="*", markersize=14, label="best epoch")
            ax.legend()
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{title}: {metric.upper()}, n={curve['n_generated']} x {curve['repeats']}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
