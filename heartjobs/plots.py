"""Plots saved as PNG with matplotlib (headless)."""

from __future__ import annotations

import io
from pathlib import Path

from heartjobs import atomic


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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic.write_bytes(Path(path), buf.getvalue())
