"""Image grids (4x4 sample sheets, contact sheets) saved as PNG through torchvision."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from heartjobs import atomic


def save_grid(images: np.ndarray, path: Path, nrow: int = 4, padding: int = 2) -> None:
    """Save uint8 images (N x H x W, or N x 1 x H x W) as one grayscale PNG grid, atomically."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    batch = torch.as_tensor(np.asarray(images, dtype=np.uint8))
    if batch.ndim == 3:
        batch = batch.unsqueeze(1)
    grid = make_grid(batch, nrow=nrow, padding=padding, pad_value=0)[0]
    buf = io.BytesIO()
    Image.fromarray(grid.numpy()).save(buf, format="PNG")
    atomic.write_bytes(Path(path), buf.getvalue())
