"""pyradiomics' GLCM feature class (the 22 features FRD v1 enables) for a batch of discretised 2D images in PyTorch.

Equal to ``radiomics.glcm.RadiomicsGLCM`` (pyradiomics 3.0.1) with FRD v1's settings (distance 1, force2D on
dimension 0 so 4 angles, symmetrical GLCM, no distance weighting): each feature is computed on the normalised GLCM of
every angle separately and averaged over the angles (``numpy.nanmean``).

How, without a per-image loop or a dense B x 4 x Ng x Ng pass: the grey levels present in each image are ranked
(the tables below are sized by how many levels are present, not by Ng: a wavelet of one bright pixel has Ng 2483
and 38 levels); every neighbour pair of every image and angle gets one key, its unordered cell (lower rank, higher
rank) in its (angle, image) group's triangle of one flat table (the symmetrical GLCM needs only the unordered pair),
and one ``bincount`` over all keys gives every co-occurrence count. The table's non-zero cells (about a sixth of it
on real images) are the sparse GLCMs that the features are reduced from, per group, with index_add. Grey levels
enter the formulas as their VALUES (1..Ng), as pyradiomics' i, j, k do after it deletes the rows/columns of absent
levels: an absent level has no cell and adds nothing, which is all that the deletion does. Sums over cells of
integer counts are exact in float64 and normalised once; Autocorrelation is sum p i j = (sum p (i + j)^2 -
sum p (i - j)^2) / 4 from the sum and difference histograms, and corm = (ClusterTendency - Contrast) / 4, a difference
of two sums of squares (off by ~eps x the variance, like pyradiomics' own sum).

What pyradiomics does that matters here (radiomics/glcm.py and base.py):
- ``Ng`` (in Idmn and Idn, and the range of k) is the MAXIMUM grey level in the mask, not the number of levels
  present, even after the empty levels are deleted.
- An angle without any in-mask neighbour pair (a mask of isolated pixels, holes) is deleted before the features, so
  the mean runs over the other angles; with no angle left every feature is NaN. pyradiomics makes no angle across a
  dimension of size 1 (a 1 x W image has the horizontal one only; a 1 x 1 image raises "Error getting angle count",
  here all NaN), and never deletes a sole angle: if it has no pair, its GLCM is 0 / 0 and every feature NaN, except
  InverseVariance when Ng is 1 (a sum over k = 1..Ng-1, empty), which is 0.
- ``numpy.nanmean`` over the angles also skips a per-angle NaN: Imc2 is NaN for an angle where rounding makes
  HXY2 < HXY (the square root of a negative number).
- Imc2 is set to 0 where HXY2 == HXY exactly, which happens for an angle with one grey level (P = [[1]]).
  Mathematically HXY2 == HXY whenever an angle's GLCM is exactly the product of its marginals, and only then can
  pyradiomics' value be rounding noise (0, a NaN that nanmean skips, or ~1e-8). Here every exactly-independent
  angle (tested in integers) gets 0, pyradiomics' value with one grey level; for the other exactly-independent
  angles (possible in hand-made 2-level patterns, not seen in real images) the two may differ by that noise.
- Imc1 divides by max(HX, HY), which with one grey level is -log2(1 + eps), negative and not 0 (the ``div == 0``
  branch only guards empty angles); the numerator HXY - HXY1 is then exactly 0, so Imc1 is 0.
- Correlation is 1 for an angle with zero variance (one grey level), else corm / (sigx * sigy + eps).
- eps is numpy.spacing(1) = 2**-52, added inside every log2.

HXY2 = -sum_ij px_i py_j log2(px_i py_j + eps) runs over all level pairs in pyradiomics; here px == py (symmetrical
GLCM) and it is expanded exactly: -2 s sum_i px_i log2 px_i - sum_ij x log2(1 + eps / x), x = px_i px_j over the K
levels with px > 0, s = sum px, the last sum taken to second order in eps / x: (K^2 eps - eps^2 / 2 (sum 1 / px)^2)
/ ln 2 (x >= 1 / (2 pairs)^2, so what is left out is below 1e-24 for 128 x 128 images).
"""

from __future__ import annotations

import math

import torch

# pyradiomics' angles for force2D on dimension 0, in its order: (z, y, x) = (0,1,1), (0,1,0), (0,1,-1), (0,0,1)
ANGLES = ((1, 1), (1, 0), (1, -1), (0, 1))
EPS = 2.0**-52  # numpy.spacing(1)
NAMES = (
    "Autocorrelation",
    "JointAverage",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "JointEnergy",
    "JointEntropy",
    "Imc1",
    "Imc2",
    "Idm",
    "Idmn",
    "Id",
    "Idn",
    "InverseVariance",
    "MaximumProbability",
    "SumEntropy",
    "SumSquares",
)


def _cell_counts(levels: torch.Tensor, image_base: torch.Tensor, per_angle: int) -> torch.Tensor:
    """The co-occurrence counts of every image and angle in one flat table of 4 x per_angle entries.

    Angle-major: group g = angle * B + image starts at angle * per_angle + image_base[image] and holds the upper
    triangle of its image's (Ng + 1) x (Ng + 1) grid, cell (lo, hi) at q(hi) + lo, q(l) = l (l + 1) / 2, lo <= hi.
    Levels are 1..Ng inside the mask and 0 outside, so a pair with a voxel outside the mask lands in a cell (0, hi),
    which the caller ignores."""
    batch, height, width = levels.shape
    index_dtype = torch.int32 if len(ANGLES) * per_angle < 2**31 else torch.int64
    lv = levels.to(index_dtype)
    # the pair (a, b)'s cell is max(q(a) + b, q(b) + a): q(hi) + lo is the larger (q(a) - q(b) >= a - b for a >= b)
    q = (lv * (lv + 1) >> 1) + image_base.to(index_dtype).view(batch, 1, 1)
    shapes = [(max(height - dy, 0), max(width - abs(dx), 0)) for dy, dx in ANGLES]
    keys = torch.empty(batch * sum(h * w for h, w in shapes), dtype=index_dtype, device=levels.device)
    start = 0
    for angle, ((dy, dx), (h, w)) in enumerate(zip(ANGLES, shapes, strict=True)):
        x_a = slice(0, w) if dx >= 0 else slice(-dx, width)  # the first voxel's columns
        x_b = slice(dx, width) if dx >= 0 else slice(0, w)  # its neighbour's
        out = keys[start : start + batch * h * w].view(batch, h, w)
        torch.maximum(q[:, :h, x_a] + lv[:, dy:, x_b], q[:, dy:, x_b] + lv[:, :h, x_a], out=out)
        out.add_(angle * per_angle)  # in place: no per-angle copy, no concatenation
        start += batch * h * w
    return torch.bincount(keys, minlength=len(ANGLES) * per_angle)


def _angle_mean(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """numpy.nanmean over the angles that have a GLCM (B x 4 -> B); NaN where none is left."""
    keep = present & ~torch.isnan(values)
    count = keep.sum(1)
    return torch.where(count > 0, torch.where(keep, values, 0.0).sum(1) / count.clamp(min=1), math.nan)


def features(levels: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """pyradiomics' GLCM features (FRD v1's 22, in pyradiomics' order) of B discretised images: levels B x H x W
    int64 (1..Ng inside the mask), mask B x H x W bool -> {name: B float64}, on the input's device."""
    device = levels.device
    batch = levels.shape[0]
    n_angles = len(ANGLES)
    groups = n_angles * batch
    if levels.numel() == 0:
        return {name: torch.full((batch,), math.nan, dtype=torch.float64, device=device) for name in NAMES}

    levels = torch.where(mask, levels, 0).long()
    ng = levels.flatten(1).amax(1)  # pyradiomics' Ng: the largest grey level in the mask
    n = max(int(ng.max()), 1)  # sync 1 of 3 (with the two below; none per image)
    # Rank the levels present in each image (0 stays 0, outside the mask): the count tables are sized by the
    # number of levels present, not by Ng (a wavelet of a bright pixel has Ng 2483 and 38 levels present).
    seen = torch.zeros(batch, n + 1, dtype=torch.bool, device=device)
    seen[:, 0] = True
    seen.scatter_(1, levels.flatten(1), True)
    rank_of = seen.cumsum(1) - 1
    ranks = rank_of.gather(1, levels.flatten(1)).view_as(levels)
    n_present = rank_of[:, -1]  # levels present in each image
    level_of = torch.zeros(batch, n + 2, dtype=torch.long, device=device)  # rank -> grey level (n + 1: absent)
    level_of.scatter_(1, torch.where(seen, rank_of, n + 1), torch.arange(n + 1, device=device).expand(batch, -1))
    triangle = (n_present + 1) * (n_present + 2) // 2
    image_base = torch.cumsum(triangle, 0) - triangle
    m, per_angle = torch.stack([n_present.max(), triangle.sum()]).tolist()  # sync 2
    m = max(m, 1)
    level_of = level_of[:, : m + 1]
    counts = _cell_counts(ranks, image_base, per_angle)

    offsets = (torch.arange(n_angles, device=device)[:, None] * per_angle + image_base).reshape(-1)
    # empty the cells (0, hi), hi = 0..Ngp, of the pairs with a voxel outside the mask (rank 0); past a group's
    # Ngp its cell (0, 0) stands in
    hi = torch.arange(m + 1, device=device)
    outside = offsets[:, None] + torch.where(hi <= n_present.repeat(n_angles)[:, None], hi * (hi + 1) >> 1, 0)
    counts.index_fill_(0, outside.view(-1), 0)

    cell = counts.nonzero().squeeze(1)  # sync 3. The sparse GLCMs: every group's non-zero cells, in order
    bounds = torch.searchsorted(cell, torch.cat([offsets, offsets.new_full((1,), n_angles * per_angle)]))
    cells = bounds.diff()  # each group's number of non-zero (lo, hi) cells
    group = torch.repeat_interleave(torch.arange(groups, device=device), cells, output_size=cell.numel())
    local = cell - offsets[group]
    q_table = torch.arange(m + 1, device=device)
    # the cell (lo, hi) of a group's index q(hi) + lo
    high_of = torch.repeat_interleave(q_table, q_table + 1, output_size=(m + 1) * (m + 2) // 2)
    low_of = torch.arange(high_of.numel(), device=device) - (high_of * (high_of + 1) >> 1)
    low, high = low_of[local], high_of[local]  # ranks
    level_flat = level_of.reshape(-1)
    image_row = group % batch * (m + 1)
    i, j = level_flat[image_row + low], level_flat[image_row + high]  # grey levels (the values), i <= j
    count = counts[cell].double()
    diagonal = low == high
    # A cell (lo, hi) holds c_ij + c_ji, the symmetrical GLCM's count of both (i, j) and (j, i); a diagonal cell
    # holds c_ii, half the symmetrical count 2 c_ii.
    sym = torch.where(diagonal, 2 * count, count)
    mult = 2.0 - diagonal.double()  # how many cells of the full matrix it stands for
    weight = mult * sym
    row_low = group * m - 1 + low  # into per-group vectors of the ranks 1..m
    row_high = row_low + (high - low)

    # integer-valued sums (exact in float64), normalised once, as pyradiomics' P /= sum(P)
    row = torch.zeros(groups * m, dtype=torch.float64, device=device)
    row.index_add_(0, row_low, sym).index_add_(0, row_high, torch.where(diagonal, 0.0, sym))
    row = row.view(groups, m)  # the symmetrical GLCM's row (== column) sums, by rank
    total = row.sum(1)  # its sum: 2 x the group's in-mask pairs
    present = total > 0
    total = torch.where(present, total, 1.0)
    k_sum = torch.arange(2, 2 * n + 1, dtype=torch.float64, device=device)
    k_diff = torch.arange(0, n, dtype=torch.float64, device=device)
    add_counts = torch.zeros(groups * (2 * n - 1), dtype=torch.float64, device=device)
    add_counts = add_counts.index_add_(0, group * (2 * n - 1) + i + j - 2, weight).view(groups, -1)
    sub_counts = torch.zeros(groups * n, dtype=torch.float64, device=device)
    sub_counts = sub_counts.index_add_(0, group * n + j - i, weight).view(groups, n)
    p_add = add_counts / total[:, None]  # p_{x+y}(k), k = 2..2 Ng
    p_sub = sub_counts / total[:, None]  # p_{x-y}(k), k = 0..Ng-1
    px = row / total[:, None]  # == py
    value = level_of[:, 1:].double().repeat(n_angles, 1)  # each group's grey level of each rank
    ux = (px * value).sum(1)  # == uy

    # the sums that need each cell's own p
    total_cell = total[group]
    p = sym / total_cell
    row_flat = row.view(-1)
    row_i, row_j = row_flat[row_low], row_flat[row_high]

    def group_sum(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(groups, dtype=torch.float64, device=device).index_add_(0, group, values)

    energy = group_sum(mult * p * p)
    minus_hxy = group_sum(mult * p * torch.log2(p + EPS))
    minus_hxy1 = group_sum(mult * p * torch.log2((row_i / total_cell) * (row_j / total_cell) + EPS))
    # an angle whose GLCM is exactly px (x) py: every cell's p == px_i px_j (in integers: sym * total == row_i
    # row_j) and every pair of the angle's K levels a cell (K (K + 1) / 2 of them (lo, hi))
    not_product = group_sum((sym * total_cell != row_i * row_j).double())

    out = {}
    # sum p i j = (sum p (i + j)^2 - sum p (i - j)^2) / 4, in integers
    out["Autocorrelation"] = ((add_counts * k_sum**2).sum(1) - (sub_counts * k_diff**2).sum(1)) / 4 / total
    out["JointAverage"] = ux
    centred = k_sum - 2 * ux[:, None]  # i + j - ux - uy
    out["ClusterProminence"] = (p_add * centred**4).sum(1)
    out["ClusterShade"] = (p_add * centred**3).sum(1)
    out["ClusterTendency"] = (p_add * centred**2).sum(1)
    out["Contrast"] = (p_sub * k_diff**2).sum(1)
    variance = (px * (value - ux[:, None]) ** 2).sum(1)  # ranks past Ngp: px 0
    sigma = variance.sqrt()  # sigx == sigy
    # corm = sum p (i - ux)(j - uy) = (cluster tendency - contrast) / 4, both sums of squares: ~eps x variance off
    corm = (out["ClusterTendency"] - out["Contrast"]) / 4
    out["Correlation"] = torch.where(sigma * sigma == 0, 1.0, corm / (sigma * sigma + EPS))
    difference_average = (p_sub * k_diff).sum(1)
    out["DifferenceAverage"] = difference_average
    out["DifferenceEntropy"] = -(p_sub * torch.log2(p_sub + EPS)).sum(1)
    out["DifferenceVariance"] = (p_sub * (k_diff - difference_average[:, None]) ** 2).sum(1)
    out["JointEnergy"] = energy
    hxy = -minus_hxy
    out["JointEntropy"] = hxy

    hx = -(px * torch.log2(px + EPS)).sum(1)  # == HY
    out["Imc1"] = torch.where(hx != 0, (hxy + minus_hxy1) / torch.where(hx != 0, hx, 1.0), 0.0)
    has = px > 0
    safe_px = torch.where(has, px, 1.0)
    levels_in_angle = has.sum(1).double()
    inverse_sum = torch.where(has, 1.0 / safe_px, 0.0).sum(1)
    hxy2 = -2 * px.sum(1) * (px * torch.log2(safe_px)).sum(1)
    hxy2 = hxy2 - (levels_in_angle**2 * EPS - EPS**2 / 2 * inverse_sum**2) / math.log(2)
    independent = (not_product == 0) & (cells == levels_in_angle * (levels_in_angle + 1) / 2)
    # (1 - e^(-2 (HXY2 - HXY)))^0.5: NaN where negative, which the angle mean then skips, as nanmean does
    out["Imc2"] = torch.where(independent, 0.0, torch.sqrt(1 - torch.exp(-2 * (hxy2 - hxy))))

    ng_group = ng.double().repeat(n_angles)[:, None]
    out["Idm"] = (p_sub / (1 + k_diff**2)).sum(1)
    out["Idmn"] = (p_sub / (1 + k_diff**2 / ng_group**2)).sum(1)
    out["Id"] = (p_sub / (1 + k_diff)).sum(1)
    out["Idn"] = (p_sub / (1 + k_diff / ng_group)).sum(1)
    out["InverseVariance"] = (p_sub[:, 1:] / k_diff[1:] ** 2).sum(1)
    maximum = torch.zeros(groups, dtype=torch.float64, device=device)
    out["MaximumProbability"] = maximum.scatter_reduce_(0, group, p, "amax")
    out["SumEntropy"] = -(p_add * torch.log2(p_add + EPS)).sum(1)
    out["SumSquares"] = variance

    present = present.view(n_angles, batch).T
    result = {name: _angle_mean(out[name].view(n_angles, batch).T, present) for name in NAMES}
    height, width = levels.shape[1:]
    if (height == 1) != (width == 1):
        # pyradiomics then has one angle (none across a dimension of size 1) and keeps it even when it has no pair:
        # its GLCM is 0 / 0, NaN, and so is every feature, except InverseVariance with Ng 1, an empty sum, 0
        no_pair = ~present.any(1) & (ng == 1)
        result["InverseVariance"] = torch.where(no_pair, 0.0, result["InverseVariance"])
    return result
