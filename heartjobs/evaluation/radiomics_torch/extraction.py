"""FRD v1's feature vector (398 columns on 2D slices, named and ordered as frd-score's pyradiomics run gives
them) for a batch of preprocessed slices, on a torch device.

Per slice: the 13 numeric diagnostics, then for each image type (original, wavelet-LH, -HL, -HH, -LL) the
firstorder, glcm, glrlm, glszm and ngtdm features the v1 extractor enables. "original_" is dropped from
the names, as heartjobs always has. A slice pyradiomics cannot process (a constant one) is a row of NaN,
which FRD v1 drops, as it drops pyradiomics' failures.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch

from . import binning, firstorder, glcm, glrlm, glszm, ngtdm
from .preprocessing import DIAGNOSTICS, IMAGE_TYPES, Prepared

TEXTURES: dict[str, Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]] = {
    "glcm": glcm.features,
    "glrlm": glrlm.features,
    "glszm": glszm.features,
    "ngtdm": ngtdm.features,
}
# the voxel volume in mm^3 after resampling (2 x 2 mm in-plane, the slice's own 1 mm): TotalEnergy's factor
VOXEL_VOLUME = 4.0


def _prefix(image_type: str) -> str:
    return "" if image_type == "original" else f"{image_type}_"


@cache
def feature_names() -> tuple[str, ...]:
    """The columns of a slice's vector, in frd-score's order (the same at every size)."""
    ramp = np.arange(64, dtype=np.float64).reshape(8, 8)
    probe = Prepared(np.stack([ramp] * len(IMAGE_TYPES)), np.ones((8, 8), bool), np.zeros(13), np.zeros(5))
    names, _ = _compute([probe], torch.device("cpu"))
    return tuple(names)


def batch_size(height: int, width: int, device: torch.device) -> int:
    """Slices per batch: about 64 at 256 px on a CPU (the texture matrices of five image types in float64
    stay within a few hundred MB), four times that on a GPU."""
    pixels = max(1, 5 * (height // 2) * (width // 2))  # five image types of each, resampled to 2 mm
    budget = (1 << 20) * (4 if device.type == "cuda" else 1)
    return int(min(512, max(4, budget // pixels)))


def features_of(prepared: list[Prepared], device: torch.device) -> np.ndarray:
    """The N x 398 float64 feature rows of N preprocessed slices of one size (NaN rows for those pyradiomics
    cannot process), computed on `device` in one batch."""
    good = [i for i, p in enumerate(prepared) if p.images is not None]
    rows = np.full((len(prepared), len(feature_names())), np.nan)
    if good:
        _, rows[good] = _compute([prepared[i] for i in good], device)
    return rows


def _compute(prepared: list[Prepared], device: torch.device) -> tuple[list[str], np.ndarray]:
    """The five image types of every slice go through each feature class as one batch of 5 B images (one
    call per class: fewer launches and host syncs than a call per image type)."""
    batch, types = len(prepared), len(IMAGE_TYPES)
    images = torch.from_numpy(np.stack([p.images for p in prepared])).to(device)  # B x 5 x h x w
    height, width = images.shape[-2:]
    image = images.reshape(batch * types, height, width)  # slice-major: row b * 5 + t
    mask = torch.from_numpy(np.stack([p.mask for p in prepared])).to(device)
    mask = mask[:, None].expand(batch, types, height, width).reshape(batch * types, height, width)
    means = torch.from_numpy(np.stack([p.means for p in prepared])).to(device).reshape(-1)
    with torch.no_grad():
        levels = binning.discretize(image, mask)
        classes = {"firstorder": firstorder.features(image, levels, mask, means, VOXEL_VOLUME)}
        classes |= {name: compute(levels, mask) for name, compute in TEXTURES.items()}
        names: list[str] = list(DIAGNOSTICS)
        columns: list[torch.Tensor] = []
        for t, image_type in enumerate(IMAGE_TYPES):
            for class_name, values in classes.items():
                names += [f"{_prefix(image_type)}{class_name}_{feature}" for feature in values]
                columns += [v.view(batch, types)[:, t].to(torch.float64) for v in values.values()]
        texture = torch.stack(columns, 1).cpu().numpy()
    return names, np.concatenate([np.stack([p.diagnostics for p in prepared]), texture], 1)
