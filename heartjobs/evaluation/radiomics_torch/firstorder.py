"""pyradiomics' firstorder features (the 18 FRD v1 uses) for a batch of images on their device.

The grey values are the preprocessed image's (float64), shifted by voxelArrayShift (300) where pyradiomics
shifts them (Energy, TotalEnergy, RootMeanSquared); Entropy and Uniformity use the discretised levels.
Voxels outside the mask are NaN and every statistic ignores them, as pyradiomics' nan-functions do.
Percentiles interpolate linearly between order statistics, as numpy's default does (on the CPU numpy's
own percentile computes them, a partial sort; on a GPU torch.quantile); the Median is the 50th percentile,
which numpy's nanmedian equals (torch's nanmedian would take the lower middle value).
Mean is not computed here: pyradiomics' numpy mean is kept bit for bit (preprocessing.py says why).
"""

from __future__ import annotations

import numpy as np
import torch

VOXEL_ARRAY_SHIFT = 300
NAMES = (
    "10Percentile",
    "90Percentile",
    "Energy",
    "Entropy",
    "InterquartileRange",
    "Kurtosis",
    "Maximum",
    "MeanAbsoluteDeviation",
    "Mean",
    "Median",
    "Minimum",
    "Range",
    "RobustMeanAbsoluteDeviation",
    "RootMeanSquared",
    "Skewness",
    "TotalEnergy",
    "Uniformity",
    "Variance",
)
EPS = torch.finfo(torch.float64).eps  # numpy.spacing(1), pyradiomics' guard inside log2


def features(
    image: torch.Tensor, levels: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, voxel_volume: float
) -> dict[str, torch.Tensor]:
    """B x H x W float64 grey values, their levels (binning.discretize) and masks, the exact Mean per
    image (B) and the volume of a voxel in mm^3 -> feature name -> B values, in pyradiomics' order."""
    batch = image.shape[0]
    full = bool(mask.all())  # FRD's slices: the whole image (then no NaN bookkeeping is needed)
    if full:
        values = image.reshape(batch, -1)
        average, total, quantile = torch.mean, torch.sum, torch.quantile
    else:
        values = torch.where(mask, image, torch.nan).reshape(batch, -1)
        average, total, quantile = torch.nanmean, torch.nansum, torch.nanquantile
    count = mask.reshape(batch, -1).sum(1).to(image.dtype)
    if image.device.type == "cpu":  # numpy's own (nan)percentile, pyradiomics' call: a partial sort, cheaper
        percentile = np.percentile if full else np.nanpercentile
        found = percentile(values.numpy(), [10, 25, 50, 75, 90], axis=1)
        p10, p25, median, p75, p90 = torch.from_numpy(np.ascontiguousarray(found))
    else:
        quantiles = torch.tensor([0.10, 0.25, 0.50, 0.75, 0.90], dtype=image.dtype, device=image.device)
        p10, p25, median, p75, p90 = quantile(values, quantiles, dim=1)
    if full:
        lowest, highest = values.aminmax(dim=1)
    else:
        lowest = torch.where(mask, image, torch.inf).reshape(batch, -1).amin(1)
        highest = torch.where(mask, image, -torch.inf).reshape(batch, -1).amax(1)
    shifted = values + VOXEL_ARRAY_SHIFT
    energy = total(shifted.mul_(shifted), 1)
    deviation = values - average(values, 1)[:, None]
    squared = deviation * deviation
    m2 = average(squared, 1)
    m3 = average(squared * deviation, 1)
    m4 = average(squared.mul_(squared), 1)  # in place: squared is not needed after
    variance = m2.clone()
    m2 = torch.where(m2 == 0, torch.ones_like(m2), m2)  # a flat region: pyradiomics divides by 1
    mean_deviation = average(deviation.abs_(), 1)
    within = (values >= p10[:, None]) & (values <= p90[:, None])
    robust = torch.where(within, values, torch.nan)
    robust_mean = torch.nanmean(robust, 1)
    robust_deviation = torch.nanmean(robust.sub_(robust_mean[:, None]).abs_(), 1)
    # the histogram of levels: p_i over the levels present (absent ones add 0 to both sums)
    flat_levels = levels.reshape(batch, -1)
    size = int(flat_levels.max()) + 1
    offsets = (torch.arange(batch, device=image.device) * size)[:, None]
    keys = flat_levels + offsets
    counts = torch.bincount(keys.flatten() if full else keys[mask.reshape(batch, -1)], minlength=batch * size)
    p = counts.view(batch, size)[:, 1:].to(image.dtype)
    p = p / p.sum(1, keepdim=True).clamp_min(1)
    out = {
        "10Percentile": p10,
        "90Percentile": p90,
        "Energy": energy,
        "Entropy": -1.0 * torch.sum(p * torch.log2(p + EPS), 1),
        "InterquartileRange": p75 - p25,
        "Kurtosis": m4 / (m2 * m2),
        "Maximum": highest,
        "MeanAbsoluteDeviation": mean_deviation,
        "Mean": mean,
        "Median": median,
        "Minimum": lowest,
        "Range": highest - lowest,
        "RobustMeanAbsoluteDeviation": robust_deviation,
        "RootMeanSquared": torch.sqrt(energy / count),
        "Skewness": m3 / m2**1.5,
        "TotalEnergy": energy * voxel_volume,
        "Uniformity": torch.sum(p * p, 1),
        "Variance": variance,
    }
    return {name: out[name] for name in NAMES}
