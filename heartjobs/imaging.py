"""Generator output in [-1, 1] to uint8 pixels, exactly as saving it to PNG with torchvision would."""

from __future__ import annotations

import torch

from heartjobs.choices import Normalize


def to_uint8(images: torch.Tensor, normalize: Normalize = "fixed") -> torch.Tensor:
    """Quantize N x C x H x W images in [-1, 1] to uint8.

    fixed: the range [-1, 1] maps to [0, 255] for every image (save_image(..., value_range=(-1, 1))).
    per_image_minmax: each image is stretched from its own min..max (the thesis' route: each FID image
    saved alone with save_image(normalize=True)).
    Both end with torchvision's quantization: x * 255 + 0.5, clamped, truncated.
    """
    x = images.detach().float()
    if normalize == "fixed":
        x = (x.clamp(-1.0, 1.0) + 1.0) / 2.0
    elif normalize == "per_image_minmax":
        flat = x.flatten(1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        x = (x - low) / (high - low).clamp(min=1e-5)
    else:
        raise ValueError(f"unknown normalize {normalize!r}")
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def save_pngs(images, folder, first_index: int = 0) -> None:
    """uint8 images (N x H x W, or N x 1 x H x W) as grayscale PNGs 000000.png, 000001.png, ... in
    `folder` (numbered from first_index): the files pytorch-fid's and frd-score's CLIs read."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    array = np.asarray(images)
    if array.ndim == 4:
        array = array[:, 0]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(array, start=first_index):
        Image.fromarray(image).save(folder / f"{i:06d}.png")
