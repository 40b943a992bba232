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

Without a per-image loop: the neighbourhood sums are one 3 x 3 box sum over the batch (on a full mask of the
levels alone in a small integer type, else grey level and mask packed in one integer), n_i and s_i one
bincount each over (image, grey level), then ranked. p_i = n_i / N_vp and i * p_i are formed as pyradiomics
forms them; Busyness's sum over pairs of |i p_i - j p_j| comes from the sorted values' gaps (exactly 0 iff
all are equal, as pyradiomics' pairwise sum), Complexity is summed over all pairs (i, j); Contrast and Strength use
the equal centred sums (sum_ij p_i p_j (i - j)^2 = 2 (sum_i p_i) sum_i p_i (i - mean)^2), which avoid
a pairwise pass and have no cancellation.
"""

from __future__ import annotations

import torch

# pyradiomics' order (the class's features in the order execute() returns them: alphabetical)
NAMES = ("Busyness", "Coarseness", "Complexity", "Contrast", "Strength")


def _nan(batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.full((batch,), float("nan"), dtype=torch.float64, device=device) for name in NAMES}


def _box(x: torch.Tensor) -> torch.Tensor:
    """The sum of each pixel's 8 neighbours (3 x 3 box of the zero-padded image, less the centre): rows,
    then columns, in x's integer type (exact)."""
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    rows = padded[..., :-2] + padded[..., 1:-1]
    rows += padded[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]
    return box.sub_(x)


def matrix(levels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, s, ivector), each B x Ngp float64: per grey-level rank (the image's present levels ascending, padded
    with n = s = 0 and value 1), the number of mask pixels n_i, the sum of |level - neighbourhood mean| s_i,
    and the grey-level value i."""
    batch, height, width = levels.shape
    device = levels.device
    lowest, top = torch.aminmax(levels) if levels.numel() else (torch.zeros(()), torch.zeros(()))
    # FRD's slices: the whole image in the mask, every pixel with a neighbour (the image is not 1 x 1)
    full = height * width > 1 and bool(mask.all()) and int(lowest) > 0
    if full:
        top = int(top)  # sizes the tables below
        lev = levels
        # |level * count - sum| <= 8 top: a small integer type keeps the box sums exact and cheap
        small = torch.int16 if top < 2**12 else torch.int32 if top < 2**28 else torch.int64
        x = levels.to(small)
        # the number of neighbours of each position, all in the image and so in the mask (3, 5 or 8)
        count = _box(torch.ones(height, width, dtype=small, device=device))
        # |level - sum / count| = |level * count - sum| / count, the numerator an exact integer
        diff = (x * count).sub_(_box(x)).abs_().to(torch.float64).div_(count)
    else:
        inside = mask & (levels > 0)
        lev = torch.where(inside, levels, 0)
        top = int(lev.max()) if lev.numel() else 0  # one sync per batch: sizes the tables below
        # the sum and number of the 8 neighbours in the mask, packed in one integer (16 * level + in mask) for
        # one box sum of the zero-padded image (outside the image counts as outside the mask); exact
        packed = (lev * 16 + inside).to(torch.int32 if top < 2**23 else torch.int64)  # 9 * 16 * 2**23 < 2**31
        box = _box(packed)
        total, count = (box >> 4).to(torch.float64), (box & 15).to(torch.float64)
        # an isolated pixel adds 0 (C: `if (count == 0) diff = 0`); sum / count as the C code divides; pixels
        # outside the mask go to level 0 below, cut off
        diff = torch.where(count > 0, (lev - total / count).abs(), 0.0)

    # n and s per grey level of each image (level 0: outside the mask, cut off)
    keys = (lev.reshape(batch, -1) + (torch.arange(batch, device=device) * (top + 1))[:, None]).flatten()
    n = torch.bincount(keys, minlength=batch * (top + 1)).view(batch, top + 1)[:, 1:]
    s = torch.bincount(keys, weights=diff.flatten(), minlength=batch * (top + 1)).view(batch, top + 1)[:, 1:]
    # ranked: the image's present levels ascending; rank `ranks` (one past the last) collects the absent ones
    present = n > 0
    ranks = max(int(present.sum(1).max()), 1) if batch else 1  # second sync: the most grey levels one image has
    slot = torch.where(present, present.cumsum(1) - 1, ranks)
    ranked = torch.zeros(3, batch, ranks + 1, dtype=torch.float64, device=device)
    ranked[2] = 1.0  # padding ranks: value 1
    values = torch.arange(1, top + 1, device=device, dtype=torch.float64).expand(batch, -1)
    for table, source in zip(ranked, (n.to(torch.float64), s, values), strict=True):
        table.scatter_(1, slot, source)
    return ranked[0, :, :ranks], ranked[1, :, :ranks], ranked[2, :, :ranks]


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
    present = (n > 0).to(torch.float64)
    ngp = present.sum(1)
    ps = p * s
    sum_p = p.sum(1)
    sum_s = s.sum(1)

    coarse = ps.sum(1)
    coarseness = torch.where(coarse != 0, 1 / coarse, 1e6)

    # sum_ij p_i p_j (i - j)^2 = 2 sum p * sum_i p_i (i - mean)^2: centred, so no cancellation
    mean = (p * i).sum(1, keepdim=True) / sum_p[:, None]
    contrast = 2 * sum_p * (p * (i - mean) ** 2).sum(1) * sum_s / nvp
    div = ngp * (ngp - 1)
    contrast = torch.where(div != 0, contrast / div, 0.0)

    # sum over present i, j of (p_i + p_j)(i - j)^2 = 2 sum_i p_i (Ngp (i - m)^2 + sum_j (j - m)^2), with m the
    # plain mean of the present levels (centred again)
    middle = (present * i).sum(1, keepdim=True) / ngp[:, None]
    spread = (present * (i - middle) ** 2).sum(1)
    strength = 2 * (ngp * (p * (i - middle) ** 2).sum(1) + spread * sum_p)
    strength = torch.where(sum_s != 0, strength / sum_s, 0.0)

    # sum over present i, j of |i p_i - j p_j| from the sorted values a_(1) <= ... <= a_(Ngp): each gap
    # a_(k+1) - a_(k) lies between k (Ngp - k) pairs, twice over; exactly 0 (Busyness 0) iff all are equal,
    # as pyradiomics' pairwise sum is; absent ranks take the largest value, so their gaps are 0
    ip = i * p
    ip = torch.where(present > 0, ip, ip.amax(1, keepdim=True)).sort(1).values
    k = torch.arange(1, ip.shape[1], dtype=torch.float64, device=device)
    absdiff = 2 * ((ip[:, 1:] - ip[:, :-1]) * k * (ngp[:, None] - k)).sum(1)
    busyness = torch.where(absdiff != 0, coarse / absdiff, 0.0)

    # pairwise: sum_ij |i - j| (p_i s_i + p_j s_j) / (p_i + p_j) over present i, j; an absent p is taken as
    # infinite, which puts its terms to 0 (finite / inf)
    p_inf = torch.where(present > 0, p, torch.inf)
    pairs = ps[:, :, None] + ps[:, None, :]
    pairs /= p_inf[:, :, None] + p_inf[:, None, :]
    pairs *= (i[:, :, None] - i[:, None, :]).abs_()
    complexity = pairs.sum((1, 2)) / nvp

    out = {
        "Busyness": busyness,
        "Coarseness": coarseness,
        "Complexity": complexity,
        "Contrast": contrast,
        "Strength": strength,
    }
    return {name: torch.where(empty, torch.nan, out[name]) for name in NAMES}
