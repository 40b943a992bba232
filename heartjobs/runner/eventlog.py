"""TensorBoard event files for a run ([output] tensorboard = true), with the `tensorboard` package's writer:
the losses per epoch, every measurement (during training and at the end: FID, KID, FRD, and each number
that asks one question under that question's name, "fidelity/precision/final", "diversity/ms_ssim_ratio/final",
"memorisation/memorised_pixels/final") and the sample grids, in the run
folder's tensorboard/, so that `tensorboard --logdir artifacts` shows a whole study. Optional: heartjobs
runs without the package unless a spec asks for this.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from heartjobs.errors import HeartjobsError
from heartjobs.evaluation.metrics import numbers

if TYPE_CHECKING:
    from heartjobs.records import Measurement


def check_available(spec_path: Path | str) -> None:
    """A one-line error naming the spec file and field when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise HeartjobsError(
            f"{spec_path}: output.tensorboard: the tensorboard package is not installed "
            "(pip install 'heartjobs[tensorboard]', or set tensorboard = false)"
        ) from None


class EventLog:
    """A run's event files. `resume_epoch` (training's writer): epochs after it that an earlier process
    logged are dropped (they are trained again from the checkpoint), so each epoch appears once; None (the
    final measurement's writer) drops nothing."""

    def __init__(self, folder: Path, resume_epoch: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(folder), purge_step=None if resume_epoch is None else resume_epoch + 1)

    def epoch(self, stats: dict) -> None:
        step = stats["epoch"]
        for key in ("d_loss", "g_loss"):
            self._writer.add_scalar(f"loss/{key.removesuffix('_loss').upper()}", stats[key], step)
        if "images_per_s" in stats:
            self._writer.add_scalar("speed/images_per_s", stats["images_per_s"], step)
        for key in ("ada_p", "ada_rt"):  # ADA's augmentation probability and overfitting heuristic
            if stats.get(key) is not None:
                self._writer.add_scalar(f"ada/{key.removeprefix('ada_')}", stats[key], step)

    def samples(self, grid_png: Path, epoch: int) -> None:
        """A sample grid, as the PNG the run saved."""
        from PIL import Image

        with Image.open(grid_png) as grid:
            image = np.asarray(grid.convert("L"))
        self._writer.add_image("samples", image, epoch, dataformats="HW")

    def measurement(self, record: Measurement, during: bool) -> None:
        """One measurement record (heartjobs.evaluation.records), at its snapshot's epoch; `during`: taken
        while training ran (its own tag: the sizes differ from the final measurement's)."""
        step, kind = record.epoch, "during" if during else "final"
        self._writer.add_scalar(f"fid/{kind}", record.fid_mean, step)
        if record.kid_mean is not None:
            self._writer.add_scalar(f"kid/{kind}", record.kid_mean, step)
        if "mean" in (record.frd or {}):
            self._writer.add_scalar(f"frd/{kind}", record.frd["mean"], step)
        for key, (_, number) in numbers().items():
            value = record.number(key)
            if number.question != "overall" and value is not None:
                self._writer.add_scalar(f"{number.question}/{key}/{kind}", value, step)
        spaces = record.memorised_spaces()
        if spaces is not None:  # 1: flagged in some space (memorisation.memorised), 0: in none
            flagged = bool(spaces) or record.memorisation.get("memorised") is True
            self._writer.add_scalar(f"memorisation/memorised/{kind}", float(flagged), step)

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self._writer.close()
