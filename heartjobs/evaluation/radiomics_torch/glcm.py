"""pyradiomics' GLCM feature class (the 22 features FRD v1 enables) for a batch of discretised 2D images in PyTorch.

Equal to ``radiomics.glcm.RadiomicsGLCM`` (pyradiomics 3.0.1) with FRD v1's settings (distance 1, force2D on
dimension 0 so 4 angles, symmetrical GLCM, no distance weighting): each feature is computed on the normalised GLCM of
every angle separately and averaged over the angles (``numpy.nanmean``).

How, without a per-image loop or a dense B x 4 x Ng x Ng pass: each voxel gets a code, its grey level, or, where
the levels present are so sparse that tables by level would outgrow the voxels (a wavelet of one bright pixel has
Ng 2483 and 38 levels), its rank among the levels present in its image; every neighbour pair of every image and
angle gets one key, its unordered cell (lower code, higher code) in its (angle, image) group's triangle of one flat
table (the symmetrical GLCM needs only the unordered pair), and one ``bincount`` over all keys gives every
co-occurrence count. The images are padded with a row and a column of code 0 (outside the mask) and flattened, so
that each angle is one offset and the keys are a few passes over cache-sized chunks. The table's non-zero cells
(about a fifth of it on real images) are the sparse GLCMs; one pass of index_add per sum reduces them to each
group's row sums and sum and difference histograms (by grey level) and to three sums of a function of each cell's
count c: c^2, c log2 c and c / (r_i r_j); the features follow from these small per-group tables. Grey levels enter
the formulas as their VALUES (1..Ng), as pyradiomics' i, j, k do after it deletes the rows/columns of absent levels:
an absent level has no cell and adds nothing, which is all that the deletion does. Sums of integer counts are exact
in float64 and normalised once; Autocorrelation is sum p i j = (sum p (i + j)^2 - sum p (i - j)^2) / 4 from the sum
and difference histograms, and corm = (ClusterTendency - Contrast) / 4, a difference of two sums of squares (off by
~eps x the variance, like pyradiomics' own sum). With P the full symmetrical count matrix (a cell c stands for P_ij
= P_ji = c, or P_ii = 2 c), T = sum P and r its row sums, the entropies are expanded exactly but for terms below
1e-13: HXY = log2 T - sum P log2 P / T - eps / ln 2 x (the non-zero entries of P), to first order in eps T / P,
and HXY1 = 2 log2 T - 2 sum_i r_i log2 r_i / T - eps T / ln 2 sum P_ij / (r_i r_j), to first order in
eps T^2 / (r_i r_j) (for 128 x 128 images, T <= 2^15: below 2^-37 and 2^-22).

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
  branch only guards empty angles); the numerator HXY - HXY1 is then exactly 0, so Imc1 is 0 (set here: the
  expanded HXY and HXY1 may differ by rounding).
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


# the table's angles: those one row down in the order of their voxel's offset in a row-major image, then the
# horizontal one (ANGLES[TABLE_ORDER[slot]] is the angle in the table's slot)
TABLE_ORDER = (2, 1, 0, 3)
# voxels per pass of _cell_counts on the CPU: its passes over a chunk stay in the cache (at 30 x 128 x 128 the keys
# take 1.6 ms instead of 2.7 ms in passes over the whole batch); on a GPU one pass
CPU_CHUNK = 1 << 15


def _cell_counts(q: torch.Tensor, code: torch.Tensor, per_angle: int) -> torch.Tensor:
    """The co-occurrence counts of every image and angle in one flat table of 4 x per_angle entries.

    Slot-major (angle ANGLES[TABLE_ORDER[slot]]): group g = slot * B + image starts at slot * per_angle +
    image_base[image] and holds the upper triangle of its image's (K + 1) x (K + 1) grid of codes (grey levels or
    their ranks), cell (lo, hi) at q(hi) + lo, q(l) = l (l + 1) / 2, lo <= hi. ``code`` is B x (H + 1) x (W + 1):
    each voxel's code (int32), 0 outside the mask and in the padding row and column; ``q`` each voxel's q(code) +
    image_base (int32 or int64: the keys' type). In the padded images, flattened, every angle is one
    offset, and a pair that would cross a row's or an image's end has a padding voxel, as a pair with a voxel
    outside the mask has: such a pair lands in a cell (0, hi), which the caller ignores (a padding voxel's q is
    its own image's base, not above that of the other voxel's image)."""
    row = code.shape[2]
    code, q = code.reshape(-1), q.reshape(-1)
    length = code.numel() - row - 1  # every pair whose first voxel is not in the last padding row
    keys = torch.empty(len(ANGLES) * length, dtype=q.dtype, device=q.device)
    down, right = keys[: 3 * length].view(3, length), keys[3 * length :]
    chunk = CPU_CHUNK if code.device.type == "cpu" else length
    swapped = torch.empty(3 * min(chunk, length), dtype=q.dtype, device=q.device)
    slot_offset = torch.arange(3, dtype=q.dtype, device=q.device)[:, None] * per_angle
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        size = end - start
        # the pair (a, b)'s cell is max(q(a) + b, q(b) + a): q(hi) + lo is the larger (q(a) - q(b) >= a - b for
        # a >= b). One row down: offsets row - 1, row, row + 1, three overlapping windows
        out, other = down[:, start:end], swapped[: 3 * size].view(3, size)
        torch.add(q[start:end], code[start + row - 1 : end + row + 1].unfold(0, size, 1), out=out)
        torch.add(q[start + row - 1 : end + row + 1].unfold(0, size, 1), code[start:end], out=other)
        torch.maximum(out, other, out=out).add_(slot_offset)
        out, other = right[start:end], swapped[:size]
        torch.add(q[start:end], code[start + 1 : end + 1], out=out)
        torch.add(q[start + 1 : end + 1], code[start:end], out=other)
        torch.maximum(out, other, out=out).add_(3 * per_angle)
    return torch.bincount(keys, minlength=len(ANGLES) * per_angle)


def _angle_mean(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """numpy.nanmean over the angles that have a GLCM (F x B x 4 -> F x B); NaN where none is left."""
    keep = present & ~torch.isnan(values)
    count = keep.sum(-1)
    return torch.where(count > 0, torch.where(keep, values, 0.0).sum(-1) / count.clamp(min=1), math.nan)


def features(levels: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """pyradiomics' GLCM features (FRD v1's 22, in pyradiomics' order) of B discretised images: levels B x H x W
    int64 (1..Ng inside the mask), mask B x H x W bool -> {name: B float64}, on the input's device."""
    device = levels.device
    batch, height, width = levels.shape
    n_angles = len(ANGLES)
    groups = n_angles * batch
    if levels.numel() == 0:
        return {name: torch.full((batch,), math.nan, dtype=torch.float64, device=device) for name in NAMES}

    if not bool(mask.view(torch.uint8).min()):  # sync 1 of 4 (5 with ranks; none per image)
        levels = torch.where(mask, levels, 0)
    levels = levels.long()
    # each voxel's code (below), in images padded with a row and a column of code 0 (see _cell_counts)
    code = torch.empty(batch, height + 1, width + 1, dtype=torch.int32, device=device)
    code[:, height, :] = 0
    code[:, :, width] = 0
    code[:, :height, :width] = levels
    ng = code.view(batch, -1).amax(1).long()  # pyradiomics' Ng: the largest grey level in the mask
    value_triangle = (ng + 1) * (ng + 2) // 2
    n, value_cells = torch.stack([ng.max(), value_triangle.sum()]).tolist()  # sync 2
    n = max(n, 1)
    # The cells are indexed by a code per voxel: its grey level, or, where the levels present are so sparse that
    # the tables by level would outgrow the voxels (a wavelet of one bright pixel has Ng 2483 and 38 levels), its
    # rank among the levels present in its image (0 stays 0, outside the mask). Ranks keep the order of the levels.
    if value_cells <= levels.numel():
        level_of = None
        top = ng  # each image's largest code
        m, per_angle = n, value_cells
        code_q = torch.arange(n + 1, device=device).expand(batch, -1)  # code of each grey level
    else:
        seen = torch.zeros(batch, n + 1, dtype=torch.bool, device=device)
        seen[:, 0] = True
        seen.scatter_(1, levels.flatten(1), True)
        code_q = seen.cumsum(1) - 1  # rank of each grey level
        top = code_q[:, -1]  # levels present in each image
        level_of = torch.zeros(batch, n + 2, dtype=torch.long, device=device)  # rank -> grey level (n + 1: absent)
        level_of.scatter_(1, torch.where(seen, code_q, n + 1), torch.arange(n + 1, device=device).expand(batch, -1))
        m, per_angle = torch.stack([top.max(), ((top + 1) * (top + 2) // 2).sum()]).tolist()  # sync 2b
        m = max(m, 1)
        level_of = level_of[:, : m + 1]
    triangle = (top + 1) * (top + 2) // 2
    image_base = torch.cumsum(triangle, 0) - triangle
    index_dtype = torch.int32 if n_angles * per_angle < 2**31 else torch.int64
    q_of = (code_q * (code_q + 1) // 2 + image_base[:, None]).to(index_dtype)
    # each voxel's code and q(code) + image_base, in the padded images
    if level_of is not None:
        ranks = code_q.to(torch.int32)[:, None, :].expand(batch, height, -1)
        torch.gather(ranks, 2, levels, out=code[:, :height, :width])
    q = torch.empty(code.shape, dtype=index_dtype, device=device)
    q[:, height, :] = image_base[:, None]
    q[:, :, width] = image_base[:, None]
    torch.gather(q_of[:, None, :].expand(batch, height, -1), 2, levels, out=q[:, :height, :width])
    counts = _cell_counts(q, code, per_angle)

    offsets = (torch.arange(n_angles, device=device)[:, None] * per_angle + image_base).reshape(-1)
    # empty the cells (0, hi), hi = 0..top, of the pairs with a voxel outside the mask (code 0); past a group's
    # top its cell (0, 0) stands in
    hi = torch.arange(m + 1, device=device)
    q_hi = hi * (hi + 1) >> 1
    inside = hi <= top.repeat(n_angles)[:, None]
    counts.index_fill_(0, (offsets[:, None] + torch.where(inside, q_hi, 0)).view(-1), 0)
    # the diagonal cells (h, h), by code (0 for (0, 0) and past the group's top)
    diagonal = counts[(offsets[:, None] + torch.where(inside, q_hi + hi, 0)).view(-1)].view(groups, m + 1).double()

    cell = counts.nonzero().squeeze(1)  # sync 3. The sparse GLCMs: every group's non-zero cells, in order
    bounds = torch.searchsorted(cell, torch.cat([offsets, offsets.new_full((1,), n_angles * per_angle)]))
    cells = bounds.diff()  # each group's number of non-zero (lo, hi) cells
    group = torch.repeat_interleave(torch.arange(groups, device=device), cells, output_size=cell.numel())
    local = cell - offsets.index_select(0, group)
    # the cell (lo, hi) of a group's index q(hi) + lo
    high_of = torch.repeat_interleave(hi, hi + 1, output_size=(m + 1) * (m + 2) // 2)
    low_of = torch.arange(high_of.numel(), device=device) - (high_of * (high_of + 1) >> 1)
    i, j = low_of.index_select(0, local), high_of.index_select(0, local)  # codes, i <= j
    if level_of is not None:  # ranks -> grey levels
        image_row = torch.repeat_interleave(torch.arange(groups, device=device) % batch * (m + 1), cells)
        level_flat = level_of.reshape(-1)
        i, j = level_flat.index_select(0, image_row + i), level_flat.index_select(0, image_row + j)
    # A cell (lo, hi) holding c stands for c at (i, j) and at (j, i) of the symmetrical GLCM, or for 2 c at (i, i)
    # on the diagonal: 2 c of the full matrix either way. Every sum below is of integers (exact in float64) or of a
    # function of c, normalised once, as pyradiomics' P /= sum(P).
    count = counts.index_select(0, cell).double()

    # rows (== columns) by grey level, and the sum and difference histograms (of c, half the full matrix's)
    row_key = torch.add(i, group, alpha=n + 1)
    col_key = torch.add(j, group, alpha=n + 1)
    flat_rows = torch.zeros(groups * (n + 1), dtype=torch.float64, device=device)
    row = flat_rows.index_add_(0, row_key, count).index_add_(0, col_key, count).view(groups, n + 1)
    add_counts = torch.zeros(groups * 2 * (n + 1), dtype=torch.float64, device=device)  # by i + j = 0..2 n + 1
    add_counts = add_counts.index_add_(0, row_key + col_key, count).view(groups, -1)
    sub_counts = torch.zeros(groups * (n + 1), dtype=torch.float64, device=device)  # by j - i = 0..n
    sub_counts = sub_counts.index_add_(0, col_key - i, count).view(groups, -1)
    # per-cell sums, first by (group, i) (no contention on a few bins), then per group: c^2, c log2 c, and
    # sum_cells c / (r_i r_j) = sum_i (1 / r_i) sum_(cells of row i) c / r_j
    inverse_row = 1.0 / row.clamp(min=1.0)  # a row 0 has no cell
    by_row = torch.zeros(3, groups * (n + 1), dtype=torch.float64, device=device)
    by_row[0].index_add_(0, row_key, count * count)
    by_row[1].index_add_(0, row_key, count * torch.log2(count))
    by_row[2].index_add_(0, row_key, count * inverse_row.view(-1).index_select(0, col_key))
    by_row = by_row.view(3, groups, n + 1)
    square_sum, clogc_sum = by_row[:2].sum(2)
    spread = 2 * (by_row[2] * inverse_row).sum(1)  # sum over the full matrix of P_ij / (r_i r_j)
    largest = torch.zeros(groups, dtype=torch.float64, device=device).scatter_reduce_(0, group, count, "amax")

    total = row.sum(1)  # the symmetrical GLCM's sum: 2 x the group's in-mask pairs
    present = total > 0
    total = torch.where(present, total, 1.0)
    log_total = torch.log2(total)
    k_sum = torch.arange(0, 2 * n + 2, dtype=torch.float64, device=device)
    k_diff = torch.arange(0, n + 1, dtype=torch.float64, device=device)
    p_add = add_counts * (2 / total[:, None])  # p_{x+y}(k), k = 0..2 Ng (+ 1: 0)
    p_sub = sub_counts * (2 / total[:, None])  # p_{x-y}(k), k = 0..Ng-1 (.. n: 0)
    px = row / total[:, None]  # == py, by grey level 0..n
    value = torch.arange(n + 1, dtype=torch.float64, device=device)
    ux = (px * value).sum(1)  # == uy

    diagonal_sum = diagonal.sum(1)
    diagonal_cells = (diagonal > 0).sum(1)
    # sum p^2 over the full matrix: 2 c^2 per off-diagonal cell, (2 c)^2 per diagonal one
    energy = 2 * (square_sum + (diagonal * diagonal).sum(1)) / total**2
    # -sum p log2(p + eps) = -sum p log2 p + log2 T (sum p = 1) - eps / ln 2 per non-zero entry (to first order in
    # eps T / P); sum_full P log2 P = 2 sum c log2 c + 2 sum_diagonal c (2 c log2 2 c on the diagonal)
    full_entries = 2 * cells - diagonal_cells
    hxy = log_total - 2 * (clogc_sum + diagonal_sum) / total - full_entries * (EPS / math.log(2))
    # -sum p log2(px_i py_j + eps) = 2 log2 T - (2 / T) sum_i r_i log2 r_i - eps T / ln 2 sum P_ij / (r_i r_j)
    # (to first order in eps T^2 / (r_i r_j): see the module's docstring)
    row_log = (row * torch.log2(row.clamp(min=1.0))).sum(1)
    hxy1 = 2 * log_total - 2 * row_log / total - total * spread * (EPS / math.log(2))

    out = {}
    # sum p i j = (sum p (i + j)^2 - sum p (i - j)^2) / 4, in integers
    k_diff_2 = k_diff * k_diff
    out["Autocorrelation"] = (add_counts @ (k_sum * k_sum) - sub_counts @ k_diff_2) / 2 / total
    out["JointAverage"] = ux
    centred = k_sum - 2 * ux[:, None]  # i + j - ux - uy
    centred_2 = centred * centred
    p_centred_2 = p_add * centred_2
    out["ClusterProminence"] = (p_centred_2 * centred_2).sum(1)
    out["ClusterShade"] = (p_centred_2 * centred).sum(1)
    out["ClusterTendency"] = p_centred_2.sum(1)
    # the sums of p_{x-y}(k) with weights of k alone, in one product
    weights = [k_diff_2, k_diff, 1 / (1 + k_diff_2), 1 / (1 + k_diff), torch.where(k_diff > 0, 1 / k_diff_2, 0.0)]
    contrast, difference_average, idm, id_, inverse_variance = (p_sub @ torch.stack(weights, 1)).unbind(1)
    out["Contrast"] = contrast
    variance = (px * (value - ux[:, None]) ** 2).sum(1)  # levels absent: px 0
    sigma = variance.sqrt()  # sigx == sigy
    # corm = sum p (i - ux)(j - uy) = (cluster tendency - contrast) / 4, both sums of squares: ~eps x variance off
    corm = (out["ClusterTendency"] - out["Contrast"]) / 4
    out["Correlation"] = torch.where(sigma * sigma == 0, 1.0, corm / (sigma * sigma + EPS))
    out["DifferenceAverage"] = difference_average
    out["DifferenceEntropy"] = -(p_sub * torch.log2(p_sub + EPS)).sum(1)
    out["DifferenceVariance"] = (p_sub * (k_diff - difference_average[:, None]) ** 2).sum(1)
    out["JointEnergy"] = energy
    out["JointEntropy"] = hxy

    hx = -(px * torch.log2(px + EPS)).sum(1)  # == HY
    has = px > 0
    levels_in_angle = has.sum(1)
    # with one grey level HX is -log2(1 + eps) and pyradiomics' HXY - HXY1 exactly 0
    out["Imc1"] = torch.where((hx != 0) & (levels_in_angle > 1), (hxy - hxy1) / torch.where(hx != 0, hx, 1.0), 0.0)
    safe_px = torch.where(has, px, 1.0)
    inverse_sum = torch.where(has, 1.0 / safe_px, 0.0).sum(1)
    levels_in_angle = levels_in_angle.double()
    hxy2 = -2 * px.sum(1) * (px * torch.log2(safe_px)).sum(1)
    hxy2 = hxy2 - (levels_in_angle**2 * EPS - EPS**2 / 2 * inverse_sum**2) / math.log(2)
    # an angle whose GLCM is exactly px (x) py: every pair of its K levels a cell (K (K + 1) / 2 of them (lo, hi))
    # and every cell's p == px_i px_j (in integers: P_ij T == r_i r_j), tested where the first holds (rare: one
    # level, or hand-made patterns)
    independent = present & (cells == levels_in_angle * (levels_in_angle + 1) / 2)
    if bool(independent.any()):  # sync 4; the per-cell test only then
        row_flat = row.view(-1)
        symmetrical = torch.where(i == j, 2 * count, count)
        product = row_flat.index_select(0, row_key) * row_flat.index_select(0, col_key)
        not_product = (symmetrical * total.index_select(0, group) != product).double()
        independent &= torch.zeros(groups, dtype=torch.float64, device=device).index_add_(0, group, not_product) == 0
    # (1 - e^(-2 (HXY2 - HXY)))^0.5: NaN where negative, which the angle mean then skips, as nanmean does
    out["Imc2"] = torch.where(independent, 0.0, torch.sqrt(1 - torch.exp(-2 * (hxy2 - hxy))))

    ng_group = ng.double().repeat(n_angles)[:, None]
    out["Idm"] = idm
    out["Idmn"] = (p_sub / (1 + k_diff_2 / ng_group**2)).sum(1)
    out["Id"] = id_
    out["Idn"] = (p_sub / (1 + k_diff / ng_group)).sum(1)
    out["InverseVariance"] = inverse_variance
    out["MaximumProbability"] = torch.maximum(largest, 2 * diagonal.amax(1)) / total
    out["SumEntropy"] = -(p_add * torch.log2(p_add + EPS)).sum(1)
    out["SumSquares"] = variance

    # back to pyradiomics' order of the angles, and the mean over them
    order = torch.tensor(TABLE_ORDER, device=device).argsort()
    stacked = torch.stack([out[name] for name in NAMES]).view(len(NAMES), n_angles, batch)
    present = present.view(n_angles, batch)[order].T
    result = dict(zip(NAMES, _angle_mean(stacked[:, order].transpose(1, 2), present), strict=True))
    if (height == 1) != (width == 1):
        # pyradiomics then has one angle (none across a dimension of size 1) and keeps it even when it has no pair:
        # its GLCM is 0 / 0, NaN, and so is every feature, except InverseVariance with Ng 1, an empty sum, 0
        no_pair = ~present.any(1) & (ng == 1)
        result["InverseVariance"] = torch.where(no_pair, 0.0, result["InverseVariance"])
    return result
