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
    """Average D and G loss per epoch (the thesis' Figure 1), saved atomically; with ADA, its p and r_t at
    each epoch's end on a second axis."""
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
    handles, labels = ax.get_legend_handles_labels()
    ada = [h for h in history if h.get("ada_p") is not None]
    if ada:
        right = ax.twinx()
        right.plot([h["epoch"] for h in ada], [h["ada_p"] for h in ada], "k--", label="ADA p")
        rt = [h for h in ada if h.get("ada_rt") is not None]
        right.plot([h["epoch"] for h in rt], [h["ada_rt"] for h in rt], "k:", label="ADA r_t")
        right.set_ylabel("ADA p, r_t")
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_ladder(ladder: dict, path: Path) -> None:
    """The validity ladder, one panel per question: each number's value on the rungs it is judged on,
    scaled to its own 0..1 range and turned so that worse is up (a number that passes rises from the
    held-out images on the left); memorisation as the fraction below the threshold itself, a flagged rung
    marked. Saved atomically. A ladder.json from before the questions (no "question_rungs") is drawn as
    one overall panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_rungs = [r["name"] for r in ladder["rungs"]]
    by_name = {r["name"]: r for r in ladder["rungs"]}
    question_rungs = ladder.get("question_rungs") or {"overall": all_rungs}
    panels = [
        (question, rungs, [k for k, v in ladder["verdicts"].items() if v.get("question", "overall") == question])
        for question, rungs in question_rungs.items()
    ]
    panels = [panel for panel in panels if panel[2]]
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.2 * rows), dpi=100, squeeze=False)
    for ax, (question, rungs, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            verdict = ladder["verdicts"][key]
            series = [by_name[rung].get(key) for rung in rungs]
            series = [float("nan") if v is None else float(v) for v in series]
            rho = "-" if verdict.get("spearman") is None else f"{verdict['spearman']:.2f}"
            label = f"{key} ({'passes' if verdict['passes'] else 'FAILS'}"
            if question == "memorisation":
                ax.plot(range(len(rungs)), series, marker="o", label=f"{label})")
                flagged = [i for i, rung in enumerate(rungs) if by_name[rung].get(f"{key}_flag")]
                ax.plot(flagged, [series[i] for i in flagged], "kx", markersize=12)
                continue
            finite = [v for v in series if v == v]
            low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
            scaled = [(v - low) / (high - low) if high > low else 0.0 for v in series]
            if verdict.get("better") == "higher":
                scaled = [1.0 - v for v in scaled]
            ax.plot(range(len(rungs)), scaled, marker="o", label=f"{label}, rho {rho})")
        ax.set_xticks(range(len(rungs)), rungs, rotation=30, ha="right", fontsize=8)
        if question == "memorisation":
            ax.set_ylabel("fraction nearer a training image (x: flagged)", fontsize=8)
        else:
            ax.set_ylabel("value scaled to its range, worse up", fontsize=8)
        ax.set_title(question, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"validity ladder: {Path(ladder['prepared']).name}, n={ladder['n']} per rung")
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
