"""pyradiomics' GLRLM (grey level run length matrix) features of a batch of discretised 2D images, in PyTorch.

One job: features(levels, mask) -> the 16 GLRLM features of pyradiomics 3.0.1 for each image, as FRD v1's
extractor computes them (force2D on dimension 0, weightingNorm None), equal to pyradiomics to rounding.

How pyradiomics does it (radiomics/glrlm.py and the C calculate_glrlm, probed on small arrays):
- A run is a maximal sequence of consecutive mask pixels of one grey level along an angle; a pixel outside
  the mask or the image border ends it. The angles are (dy, dx) = (1, 1), (1, 0), (1, -1), (0, 1), but
  generate_angles drops every angle that moves along a dimension of size 1: a 1 x W image has only the
  horizontal angle, an H x 1 image only the vertical one, a 1 x 1 image none (pyradiomics then raises
  "Error getting angle count"; here every feature is NaN, as for an empty mask). The angles depend on the
  array's shape, not on the mask's bounding box (pyradiomics gets the image cropped to the mask).
- An angle none of whose lines holds two or more mask pixels is dropped: the C code ("segmentation is 2D
  for this angle", its multiElement flag) zeroes that angle's runs, so it has Nr = 0. A one-pixel mask loses
  every angle and every feature is NaN; a mask of two pixels touching at a corner keeps only that diagonal.
- P(i, j | angle) counts runs of grey level i and length j. Empty grey levels are deleted, so i runs over
  the grey-level VALUES present in the mask (ivector = grayLevels), and j over the run-length VALUES 1..;
  3.0.1 also deletes run lengths no angle has. Neither deletion changes a value (an all-zero row or column
  adds 0 to every sum, also to the entropy: 0 * log2(0 + eps) = 0), so here P has a row for each grey level
  present in the image (ranked, with its value alongside) and a column for each length 1..the batch's
  longest run.
- Every feature is computed on each angle's P separately (normalised by that angle's number of runs Nr)
  and the angles are averaged with nanmean; an angle without runs (Nr = 0 -> NaN) drops out of the mean.
- RunEntropy uses eps = numpy.spacing(1) = 2.220446049250313e-16 inside the log2.

Runs without a per-image loop: for each angle the pixels are put in "line order" (a fixed permutation that
lays every line of that angle out contiguously, first pixel first, with a spare slot between lines), so the
previous pixel along the line is the previous element. Each element holds the pixel's grey-level rank, or,
outside the mask and in the spare slots, a negative value of its own: an element continues the previous
one's run exactly when the two are equal. Runs of length >= 2 begin where the next element continues and
the element does not, and end the other way round; one nonzero lists their starts and ends in pairs, which
gives their lengths. They are few on real images (most runs there have length 1), and runs of length 1 need
no listing: per grey level they are the pixels left over once the long runs have taken theirs.
"""

from __future__ import annotations

from functools import lru_cache

import torch

# pyradiomics' order (the class's features in the order execute() returns them: alphabetical)
NAMES = (
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelRunEmphasis",
    "LongRunEmphasis",
    "LongRunHighGrayLevelEmphasis",
    "LongRunLowGrayLevelEmphasis",
    "LowGrayLevelRunEmphasis",
    "RunEntropy",
    "RunLengthNonUniformity",
    "RunLengthNonUniformityNormalized",
    "RunPercentage",
    "RunVariance",
    "ShortRunEmphasis",
    "ShortRunHighGrayLevelEmphasis",
    "ShortRunLowGrayLevelEmphasis",
)

# generate_angles(force2D, dimension 0, distance 1) as (dy, dx), in pyradiomics' order
ANGLES = ((1, 1), (1, 0), (1, -1), (0, 1))
EPS = 2.220446049250313e-16  # numpy.spacing(1)


def angles(height: int, width: int) -> tuple[tuple[int, int], ...]:
    """The angles pyradiomics uses on a height x width image: those not moving along a dimension of size 1."""
    return tuple((dy, dx) for dy, dx in ANGLES if (dy == 0 or height > 1) and (dx == 0 or width > 1))


@lru_cache(maxsize=16)
def _line_order(height: int, width: int, device: torch.device) -> torch.Tensor:
    """angles x (height * width + height + width) indices into a row of height * width pixels followed by
    height + width spare slots: for each angle, every line of pixels contiguously from its first pixel, each
    line preceded by a spare slot, and the row filled up with spare slots (each used once per angle)."""
    y = torch.arange(height, device=device).repeat_interleave(width)
    x = torch.arange(width, device=device).repeat(height)
    count = height * width
    size = count + height + width
    orders = []
    for dy, dx in angles(height, width):
        # a line is {(y0 + k dy, x0 + k dx)}: key names the line, step is the position along it
        key, step = (x - dx * y, y) if dy else (y, x)
        order = torch.argsort((key + height) * (height + width) + step)
        key = key[order]
        new_line = torch.ones(count, dtype=torch.long, device=device)
        new_line[1:] = (key[1:] != key[:-1]).long()
        # pixel k goes to position k + (the number of lines begun up to it): one spare slot before each line
        slot = torch.arange(count, device=device) + new_line.cumsum(0)
        row = torch.full((size,), -1, dtype=torch.long, device=device)
        row[slot] = order
        spare = row < 0
        row[spare] = count + torch.arange(int(spare.sum()), device=device)
        orders.append(row)
    return torch.stack(orders)


def _nan(batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.full((batch,), float("nan"), dtype=torch.float64, device=device) for name in NAMES}


def _lines_with_two(inside: torch.Tensor) -> torch.Tensor:
    """B x 4 bool, per angle of ANGLES: whether a line of that angle holds two or more mask pixels."""
    batch, height, width = inside.shape
    count = inside.to(torch.int32)

    def anti_diagonals(m: torch.Tensor) -> torch.Tensor:
        # shear: row y shifted right by y, so that the line x + y = k becomes column k
        padded = torch.nn.functional.pad(m, (0, height))
        sheared = padded.as_strided((batch, height, width + height), (height * (width + height), width + height - 1, 1))
        return sheared.sum(1)

    return torch.stack(
        (
            (anti_diagonals(count.flip(2)) > 1).any(1),  # (1, 1): x - y constant
            (count.sum(1) > 1).any(1),  # (1, 0): columns
            (anti_diagonals(count) > 1).any(1),  # (1, -1): x + y constant
            (count.sum(2) > 1).any(1),  # (0, 1): rows
        ),
        1,
    )


def matrix(levels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, ivector): P is B x angles x Ngp x Lmax float64, the run counts per angle, grey-level rank (the
    images' present grey levels in ascending order, padded with empty rows) and run length 1..Lmax (the
    longest run in the batch); ivector is B x Ngp, the grey-level value of each rank (1 on padding rows,
    which are all zero)."""
    batch, height, width = levels.shape
    device = levels.device
    count = height * width
    inside = mask & (levels > 0)
    lev = torch.where(inside, levels, 0).long().reshape(batch, count)
    top = int(lev.max()) if lev.numel() else 0  # one sync per batch: sizes the tables below
    present = torch.zeros(batch, top + 1, dtype=torch.bool, device=device)
    present.scatter_(1, lev, True)
    present[:, 0] = False  # 0 is outside the mask
    rank_of = present.to(torch.int32).cumsum(1) - 1  # the rank of each grey level among the image's present ones
    ranks = max(int(present.sum(1).max()), 1)  # second sync: the most grey levels one image has
    # the value of each rank; padding ranks get 1 (their rows are zero, 1 keeps i^-2 finite)
    values = torch.ones(batch, ranks + 1, dtype=torch.float64, device=device)
    slot = torch.where(present, rank_of, ranks).long()
    values.scatter_(1, slot, torch.arange(top + 1, device=device, dtype=torch.float64).expand(batch, -1))
    ivector = values[:, :ranks]
    rank = slot.gather(1, lev)  # B x count; `ranks` outside the mask
    pixels = torch.zeros(batch, ranks + 1, dtype=torch.float64, device=device)
    pixels.scatter_add_(1, rank, torch.ones_like(rank, dtype=torch.float64))
    pixels = pixels[:, :ranks]  # B x Ngp: the image's pixels of each grey level

    order = _line_order(height, width, device)
    n_angles, size = order.shape
    # each pixel's rank, and for outside pixels and spare slots a value of its own (negative): two elements
    # are equal only if both are in the mask with the same grey level
    unique = -1 - torch.arange(size, dtype=torch.int32, device=device)
    code = torch.cat(
        (
            torch.where(inside.reshape(batch, count), rank.to(torch.int32), unique[:count]),
            unique[count:].expand(batch, -1),
        ),
        1,
    )
    # B x angles x size: each angle's lines one after another, spare slots between
    shape = (batch, n_angles, size)
    code = code[:, None].expand(shape).gather(2, order.expand(shape))
    cont = code[..., 1:] == code[..., :-1]  # element k + 1 continues the run of element k
    # a run of length >= 2 starts where the next element continues it but the element does not continue
    # the previous one, and ends the other way round; starts and ends alternate, so one nonzero gives both
    # (spare slots begin and end each row, so the first and last element are neither)
    edge = cont[..., 1:] ^ cont[..., :-1]
    where = torch.nonzero(edge.reshape(-1)).reshape(-1, 2)  # third sync: the number of long runs
    inner = size - 2
    row = where[:, 0] // inner  # the (image, angle) row of each long run
    start = where[:, 0] % inner + 1
    length = where[:, 1] - where[:, 0] + 1
    longest = max(int(length.max()), 1) if length.numel() else 1  # fourth sync: the longest run
    long_rank = code.reshape(batch * n_angles, size)[row, start].long()

    # P[b, a, i, j - 1] = long runs counted directly, runs of length 1 as the pixels left over
    flat = torch.zeros(batch * n_angles * ranks * longest, dtype=torch.float64, device=device)
    ones = torch.ones_like(length, dtype=torch.float64)
    flat.scatter_add_(0, (row * ranks + long_rank) * longest + length - 1, ones)
    P = flat.reshape(batch, n_angles, ranks, longest)
    in_long = torch.zeros(batch * n_angles * ranks, dtype=torch.float64, device=device)
    in_long.scatter_add_(0, row * ranks + long_rank, length.to(torch.float64))
    P[..., 0] = pixels[:, None, :] - in_long.reshape(batch, n_angles, ranks)
    # pyradiomics' C code drops an angle none of whose lines holds two mask pixels ("segmentation is 2D for
    # this angle"; e.g. every angle of a one-pixel mask): it zeroes that angle's length-1 runs, its only
    # ones, so Nr = 0 and the angle leaves the mean (all gone: NaN)
    several = torch.zeros(batch * n_angles, dtype=torch.bool, device=device)
    several[row] = True  # a long run: two mask pixels on its line
    several = several.reshape(batch, n_angles)
    # no long run: all runs have length 1, one per mask pixel; more of them than lines puts two on a line
    lines = torch.tensor(
        [height if dy == 0 else width if dx == 0 else height + width - 1 for dy, dx in angles(height, width)],
        device=device,
    )
    several |= inside.reshape(batch, count).sum(1, keepdim=True) > lines
    if not bool(several.all()):  # rare (tiny or scattered masks): count the mask pixels on each line
        keep = [ANGLES.index(angle) for angle in angles(height, width)]
        several |= _lines_with_two(inside)[:, keep]
    P *= several[:, :, None, None]
    return P, ivector


def features(levels: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """pyradiomics' 16 GLRLM features of each image (B x H x W levels 1..Ng in the mask, 0 outside; the mask
    B x H x W bool): name -> B float64, in pyradiomics' order. NaN for an image with an empty mask and for
    1 x 1 images (pyradiomics has no angle there and raises)."""
    batch, height, width = levels.shape
    device = levels.device
    if batch == 0 or not angles(height, width):
        return _nan(batch, device)
    P, ivector = matrix(levels, mask)
    jvector = torch.arange(1, P.shape[3] + 1, dtype=torch.float64, device=device)
    i2 = ivector[:, None, :] ** 2  # B x 1 x Ngp
    j2 = jvector**2

    runs = P.sum((2, 3))
    nr = torch.where(runs == 0, torch.nan, runs)  # an angle without runs: NaN, left out of the mean
    pg = P.sum(3)  # B x angles x Ngp
    pr = P.sum(2)  # B x angles x Nr
    pg2 = (pg**2).sum(2)
    pr2 = (pr**2).sum(2)

    def variance(p: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        p = p / nr[..., None]
        mean = (p * values).sum(2, keepdim=True)
        return (p * (values - mean) ** 2).sum(2)

    p = P / nr[..., None, None]
    entropy = -(p * torch.log2(p + EPS)).sum((2, 3))
    run_variance = variance(pr, jvector)
    if P.shape[1] == 1:
        # one angle (a 1 x W or H x 1 image) and no runs: pyradiomics keeps the lone empty angle, deletes every
        # run-length column (none has a run), and RunEntropy and RunVariance, sums over those columns alone,
        # are sums over nothing: 0, where the other features divide by Nr = NaN (with more angles, all empty,
        # all are deleted and the mean over no angle is NaN)
        lone = (runs == 0) & mask.flatten(1).any(1, keepdim=True)
        entropy = torch.where(lone, 0.0, entropy)
        run_variance = torch.where(lone, 0.0, run_variance)
    # sum_ij P(i, j) i^a j^b = sum_i i^a (P @ j^b)_i
    by_j = P @ torch.stack((1 / j2, j2), 1)  # B x angles x Ngp x 2: sum_j P / j^2, sum_j P j^2
    short, long = by_j[..., 0], by_j[..., 1]

    per_angle = {
        "GrayLevelNonUniformity": pg2 / nr,
        "GrayLevelNonUniformityNormalized": pg2 / nr**2,
        "GrayLevelVariance": variance(pg, ivector[:, None, :]),
        "HighGrayLevelRunEmphasis": (pg * i2).sum(2) / nr,
        "LongRunEmphasis": (pr * j2).sum(2) / nr,
        "LongRunHighGrayLevelEmphasis": (long * i2).sum(2) / nr,
        "LongRunLowGrayLevelEmphasis": (long / i2).sum(2) / nr,
        "LowGrayLevelRunEmphasis": (pg / i2).sum(2) / nr,
        "RunEntropy": entropy,
        "RunLengthNonUniformity": pr2 / nr,
        "RunLengthNonUniformityNormalized": pr2 / nr**2,
        "RunPercentage": nr / (pr * jvector).sum(2),
        "RunVariance": run_variance,
        "ShortRunEmphasis": (pr / j2).sum(2) / nr,
        "ShortRunHighGrayLevelEmphasis": (short * i2).sum(2) / nr,
        "ShortRunLowGrayLevelEmphasis": (short / i2).sum(2) / nr,
    }
    return {name: torch.nanmean(per_angle[name], 1) for name in NAMES}
