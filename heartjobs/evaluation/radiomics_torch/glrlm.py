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
  1..the batch's highest and a column for each length 1..the batch's longest run.
- Every feature is computed on each angle's P separately (normalised by that angle's number of runs Nr)
  and the angles are averaged with nanmean; an angle without runs (Nr = 0 -> NaN) drops out of the mean.
- RunEntropy uses eps = numpy.spacing(1) = 2.220446049250313e-16 inside the log2.

Runs without a per-image loop: for each angle, n[p] = how many pixels back along the angle the run of pixel p
goes (0 at its first pixel) comes from the shifted image compared with itself (a pixel continues the
previous one's run when both are in the mask with one grey level) and pointer doubling (n capped at 1, 2,
4, ... in one small-integer pass each, as long as some pixel reaches the cap). The pixels with n = j - 1
at grey level i are one per run of length >= j, so one bincount over (image, grey level, n) gives
H(i, j) = the number of runs of length >= j, and P(i, j) = H(i, j) - H(i, j + 1). Absent grey levels keep
empty rows (here P has a row per level 1..the batch's highest, not per present level: the same sums).
"""

from __future__ import annotations

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


def _shift(height: int, width: int, dy: int, dx: int, k: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """(target, source) slices of the last two dimensions that pair each pixel p with p - k (dy, dx), the
    pixel k steps back along the angle; None when no pixel has one inside the image."""
    if k * dy >= height or k * abs(dx) >= width:
        return None
    rows = (slice(k * dy, height), slice(0, height - k * dy))
    if dx > 0:
        cols = (slice(k, width), slice(0, width - k))
    elif dx < 0:
        cols = (slice(0, width - k), slice(k, width))
    else:
        cols = (slice(None), slice(None))
    return (rows[0], cols[0]), (rows[1], cols[1])


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
    """(P, ivector): P is B x angles x Ng x Lmax float64, the run counts per angle, grey level 1..Ng (the
    batch's highest level; absent levels have empty rows) and run length 1..Lmax (the longest run in the
    batch); ivector is B x Ng, the grey-level value of each row (1..Ng)."""
    batch, height, width = levels.shape
    device = levels.device
    lowest, top = torch.aminmax(levels)
    full = bool(mask.all()) and int(lowest) > 0  # FRD's slices: the whole image in the mask
    inside = mask if full else mask & (levels > 0)
    lev = levels if full else torch.where(inside, levels, 0)  # 0 outside the mask
    top = int(top) if full else int(lev.amax())  # sizes the tables below
    lev = lev.to(torch.uint8 if top < 256 else torch.int16 if top < 2**15 else torch.int32)
    # n[p] (below) <= the longest line
    counter = torch.uint8 if max(height, width) < 255 else torch.int16 if max(height, width) < 2**15 else torch.int32
    runs_so_far = []
    for dy, dx in angles(height, width):
        # n[p]: how many pixels back along the angle p's run goes (0 at a run's first pixel), by doubling:
        # n_m = min(n, 2^m); where n_m reaches 2^m the run goes on past p - 2^m (dy, dx): add n_m there
        target, source = _shift(height, width, dy, dx, 1)
        cont = lev[(..., *target)] == lev[(..., *source)]  # continues the previous pixel's run
        if not full:
            cont &= inside[(..., *target)]
        n = torch.zeros(batch, height, width, dtype=counter, device=device)
        n[(..., *target)] = cont.view(torch.uint8) if counter == torch.uint8 else cont
        m = 0
        while (pair := _shift(height, width, dy, dx, 1 << m)) is not None and int(n.amax()) == 1 << m:
            target, source = pair
            # n_m >> m: 1 where n_m = 2^m, else 0 (n_m <= 2^m); integer ops throughout, exact
            n[(..., *target)] += (n >> m)[(..., *target)] * n[(..., *source)]  # the right side is built first
            m += 1
        runs_so_far.append(n)
    n_angles = len(runs_so_far)
    longest = int(max(n.amax() for n in runs_so_far)) + 1  # the longest run in the batch
    # H(b, a, i, j) = how many pixels of grey level i are the j-th pixel of their run (j = n + 1): the number of
    # runs of level i with length >= j; outside pixels go to level 0, dropped
    width_key = longest + 1
    per_angle = batch * (top + 1) * width_key
    key_type = torch.int32 if per_angle < 2**31 else torch.int64
    base = torch.arange(batch, device=device, dtype=key_type)[:, None, None] * (top + 1) + lev
    base.mul_(width_key)
    counts = []
    for n in runs_so_far:  # an angle at a time: smaller buffers, fewer fresh pages to fault in
        keys = n.to(key_type)
        keys += base
        counts.append(torch.bincount(keys.flatten(), minlength=per_angle))
    counts = torch.stack(counts).view(n_angles, batch, top + 1, width_key)
    counts = counts.transpose(0, 1)[:, :, 1:].to(torch.float64)  # B x angles x Ng x (0..longest): H(j = index + 1)
    # P(i, j) = H(i, j) - H(i, j + 1), H(i, longest + 1) = 0
    P = counts[..., :longest] - counts[..., 1:]

    # pyradiomics' C code drops an angle none of whose lines holds two mask pixels ("segmentation is 2D for
    # this angle"; e.g. every angle of a one-pixel mask): it zeroes that angle's length-1 runs, its only
    # ones, so Nr = 0 and the angle leaves the mean (all gone: NaN)
    several = torch.stack([n.flatten(1).amax(1) > 0 for n in runs_so_far], 1)  # a run of two mask pixels
    # no long run: all runs have length 1, one per mask pixel; more of them than lines puts two on a line
    lines = torch.tensor(
        [height if dy == 0 else width if dx == 0 else height + width - 1 for dy, dx in angles(height, width)],
        device=device,
    )
    pixels = height * width if full else inside.reshape(batch, -1).sum(1, keepdim=True)
    several |= pixels > lines
    if not bool(several.all()):  # rare (tiny or scattered masks): count the mask pixels on each line
        keep = [ANGLES.index(angle) for angle in angles(height, width)]
        several |= _lines_with_two(inside)[:, keep]
    P *= several[:, :, None, None]
    ivector = torch.arange(1, top + 1, dtype=torch.float64, device=device).expand(batch, -1)
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
    log = p + EPS
    entropy = -log.log2_().mul_(p).sum((2, 3))
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
