"""pyradiomics' NGTDM (neighbouring grey tone difference matrix) features of a batch of discretised 2D images,
in PyTorch.

One job: features(levels, mask) -> the 5 NGTDM features of pyradiomics 3.0.1 for each image, as FRD v1's
extractor computes them (force2D on dimension 0, distances [1]), equal to pyradiomics to rounding.

How pyradiomics does it (radiomics/ngtdm.py and the C calculate_ngtdm, probed on small arrays):
- The neighbourhood of a mask pixel is its 8 in-plane neighbours (distance 1) that lie inside the image and
  inside the mask; A_i is their mean (sum / count, in double) and the pixel adds |level - A_i| to s_level.
- A mask pixel whose neighbourhood is empty (an isolated pixel) still counts: n_level += 1 and it adds 0 to
  s_level (the docstring's "N_vp = voxels with at least 1 neighbour" is not what the C code does), so
  N_vp = the number of mask pixels.
- Empty grey levels (n_i = 0) are deleted, so the formulas see the grey-level VALUES present (ivector) and
  N_gp = the number of them; here the present levels are ranked with their values alongside and padding
  ranks are excluded by p_i = 0 where pyradiomics excludes p_i = 0 terms.
- Special values: Coarseness 1e6 where sum p_i s_i = 0; Contrast 0 where N_gp (N_gp - 1) = 0; Busyness 0
  where sum |i p_i - j p_j| = 0; Strength 0 where sum s_i = 0; Complexity has none (N_vp >= 1).
- A 1 x 1 image has no angles: pyradiomics raises "Error getting angle count"; here every feature is NaN,
  as for an empty mask. (An H x 1 or 1 x W image loses the angles along its size-1 dimension, but those
  neighbours would be outside the image anyway.)

Terms are computed as pyradiomics does (p_i = n_i / N_vp, then i * p_i, pairwise sums over i, j) so that
the exact-zero tests above fall the same way.
"""

from __future__ import annotations

import torch

# pyradiomics' order (the class's features in the order execute() returns them: alphabetical)
NAMES = ("Busyness", "Coarseness", "Complexity", "Contrast", "Strength")

NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _nan(batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.full((batch,), float("nan"), dtype=torch.float64, device=device) for name in NAMES}


def matrix(levels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, s, ivector), each B x Ngp float64: per grey-level rank (the image's present levels ascending, padded
    with n = s = 0 and value 1), the number of mask pixels n_i, the sum of |level - neighbourhood mean| s_i,
    and the grey-level value i."""
    batch, height, width = levels.shape
    device = levels.device
    inside = mask & (levels > 0)
    lev = torch.where(inside, levels, 0)
    value = lev.to(torch.float64)
    weight = inside.to(torch.float64)
    # the 8 neighbours by shifting a zero-padded copy: outside the image counts as outside the mask
    padded_value = torch.nn.functional.pad(value, (1, 1, 1, 1))
    padded_weight = torch.nn.functional.pad(weight, (1, 1, 1, 1))
    total = torch.zeros_like(value)
    count = torch.zeros_like(value)
    for dy, dx in NEIGHBOURS:
        total += padded_value[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        count += padded_weight[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    # an isolated pixel adds 0 (C: `if (count == 0) diff = 0`); sum / count as the C code divides
    diff = torch.where(count > 0, (value - total / count.clamp(min=1)).abs(), 0.0) * weight

    flat = lev.reshape(batch, -1)
    top = int(flat.max()) if flat.numel() else 0  # one sync per batch: sizes the tables below
    present = torch.zeros(batch, top + 1, dtype=torch.bool, device=device)
    present.scatter_(1, flat, True)
    present[:, 0] = False  # 0 is outside the mask
    rank_of = present.long().cumsum(1) - 1
    ranks = max(int(present.sum(1).max()), 1)  # second sync: the most grey levels one image has
    # rank ranks (one past the last) collects the outside pixels, with weight 0, and is cut off
    slot = torch.where(present, rank_of, ranks)
    ivector = torch.ones(batch, ranks + 1, dtype=torch.float64, device=device)
    ivector.scatter_(1, slot, torch.arange(top + 1, device=device, dtype=torch.float64).expand(batch, -1))
    rank = slot.gather(1, flat)
    n = torch.zeros(batch, ranks + 1, dtype=torch.float64, device=device)
    n.scatter_add_(1, rank, weight.reshape(batch, -1))
    s = torch.zeros(batch, ranks + 1, dtype=torch.float64, device=device)
    s.scatter_add_(1, rank, diff.reshape(batch, -1))
    return n[:, :ranks], s[:, :ranks], ivector[:, :ranks]


def features(levels: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """pyradiomics' 5 NGTDM features of each image (B x H x W levels 1..Ng in the mask, 0 outside; the mask
    B x H x W bool): name -> B float64, in pyradiomics' order. NaN for an image with an empty mask and for
    1 x 1 images (pyradiomics has no angle there and raises)."""
    batch, height, width = levels.shape
    device = levels.device
    if batch == 0 or height * width == 1:
        return _nan(batch, device)
    n, s, i = matrix(levels, mask)
    nvp = n.sum(1)
    empty = nvp == 0
    p = n / nvp[:, None]  # 0/0 = NaN for an empty mask: every feature NaN below
    ngp = (n > 0).sum(1).to(torch.float64)
    both = (n[:, :, None] > 0) & (n[:, None, :] > 0)  # the (i, j) terms pyradiomics keeps (p_i, p_j != 0)
    di = i[:, :, None] - i[:, None, :]
    ps = p * s

    coarse = ps.sum(1)
    coarseness = torch.where(coarse != 0, 1 / coarse, 1e6)

    div = ngp * (ngp - 1)
    contrast = (p[:, :, None] * p[:, None, :] * di**2).sum((1, 2)) * s.sum(1) / nvp
    contrast = torch.where(div != 0, contrast / div, 0.0)

    ip = i * p
    absdiff = torch.where(both, (ip[:, :, None] - ip[:, None, :]).abs(), 0.0).sum((1, 2))
    busyness = torch.where(absdiff != 0, coarse / absdiff, 0.0)

    numerator = torch.where(both, ps[:, :, None] + ps[:, None, :], 0.0)
    divisor = p[:, :, None] + p[:, None, :]
    divisor = torch.where(divisor == 0, 1.0, divisor)
    complexity = (di.abs() * numerator / divisor).sum((1, 2)) / nvp

    sum_s = s.sum(1)
    strength = torch.where(both, (p[:, :, None] + p[:, None, :]) * di**2, 0.0).sum((1, 2))
    strength = torch.where(sum_s != 0, strength / sum_s, 0.0)

    out = {
        "Busyness": busyness,
        "Coarseness": coarseness,
        "Complexity": complexity,
        "Contrast": contrast,
        "Strength": strength,
    }
    return {name: torch.where(empty, torch.nan, out[name]) for name in NAMES}
