"""Diversity of a set of images as MS-SSIM between random pairs of its images (Odena et al. 2017, "Conditional
Image Synthesis with Auxiliary Classifier GANs", sec. 4.2: the mode-collapse check), for the generated set and
for the real set, and their ratio.

A set whose images look alike has a high mean pairwise MS-SSIM; a collapsed generator (one image repeated)
scores near 1. The real slices' own mean is the yardstick: ratio = generated / real, above 1 means the
generated set is less diverse than the real one, below 1 more diverse (noise scores near 0).

MS-SSIM is pytorch-msssim 1.0.0's (Wang, Simoncelli, Bovik 2003, as that package implements it): its
Gaussian window (`_fspecial_gauss_1d`, 11 taps, sigma 1.5), its per-scale SSIM and contrast-structure terms
(`_ssim`, K = (0.01, 0.03)), its 2x2 average pooling between scales, relu on every term, and the product of
the terms raised to the scale weights, on uint8 images with data_range 255, in float32 as the package is
usually run (per pair within 5e-6 of float64 on the phantom, the mean within 2e-7). Only the number of
scales is ours, because pytorch-msssim's `ms_ssim` asserts that the smaller image side exceeds
(win - 1) * 2^4 = 160 px (five scales of an 11-tap window) and so refuses 32-128 px slices:

    Rule: the window stays 11 taps, sigma 1.5 (the reference window). The number of scales is the largest
    L <= 5 for which the image at the coarsest scale (after L - 1 of the package's poolings) is still at
    least one window wide, so every scale is filtered (pytorch-msssim skips, with a warning, the smoothing
    of a side shorter than the window). The weights are the reference five, 0.0448, 0.2856, 0.3001,
    0.2363, 0.1333 (finest to coarsest), cut to the first L and renormalised to sum to 1 (at L = 5 kept
    as they are, summing to 1.0001, so that 5 scales is the package's default exactly).
    32 px: 2 scales (32, 16); 64 px: 3 (down to 16); 128 px: 4 (down to 16); 256 px: all 5 (down to 16),
    where the result is pytorch-msssim's `ms_ssim` with its defaults. Under 11 px: refused.

The rule generalises the package's own condition (which is L = 5 only) and equals `ms_ssim` called with the
same window and weights wherever that call is allowed; tests/test_diversity.py also checks it against
`ms_ssim` run with the size assertion stripped at 32 and 64 px. A batch of pairs goes through the
package's functions as the channels of one image (see ms_ssim_of_pairs): the same numbers, ~6x faster.

Pairs: two distinct images i != j. When the number asked for reaches the number of unordered pairs
n (n - 1) / 2 (the smoke job's 16 images have 120) every pair is taken once and the mean is exact;
otherwise pairs are drawn uniformly, with replacement among pairs, by numpy's PCG64 seeded with
(seed, 0) for the generated set and (seed, 1) for the real set, so one set's pairs do not depend on the
other's size. MS-SSIM is symmetric, so (i, j) and (j, i) are the same pair.

Cost on the CPU (phantom slices, best of 3, batches of 64): 1000 pairs take 0.14 s at 64 px and 3.8 s at
256 px on one thread, 0.10 s and 1.8 s on two; the metric measures two sets, so twice that per call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from heartjobs.errors import HeartjobsError

REFERENCE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, pytorch-msssim's default
WINDOW = 11
WINDOW_SIGMA = 1.5
K = (0.01, 0.03)
DATA_RANGE = 255.0
DEFAULT_PAIRS = 1000
# Pairs per batch: 64 pairs at 256 px hold ~0.2 GB of float32 maps at the finest scale, and ran fastest
# (1.7 s per 1000 pairs on 2 shared cores, against 3.6 s at 128 and 4.7 s at 256; the result does not change).
DEFAULT_BATCH = 64


def _pooled(side: int) -> int:
    """A side after one of pytorch-msssim's poolings: avg_pool(kernel 2, stride 2, padding side % 2)."""
    return (side + 2 * (side % 2) - 2) // 2 + 1


def scales_for(height: int, width: int, window: int = WINDOW) -> int:
    """The rule in the module docstring: the most scales (<= 5) whose coarsest image is >= one window wide."""
    if min(height, width) < window:
        raise HeartjobsError(
            f"MS-SSIM needs images at least {window} px on each side (one {window}-tap window); got {height}x{width}"
        )
    scales, h, w = 1, height, width
    while scales < len(REFERENCE_WEIGHTS):
        h, w = _pooled(h), _pooled(w)
        if min(h, w) < window:
            break
        scales += 1
    return scales


def weights_for(scales: int) -> list[float]:
    """The reference weights of the finest `scales` scales, renormalised to sum to 1; all five as they are
    (they sum to 1.0001: kept, so that 5 scales is pytorch-msssim's default exactly)."""
    cut = REFERENCE_WEIGHTS[:scales]
    return list(cut) if scales == len(REFERENCE_WEIGHTS) else [w / sum(cut) for w in cut]


def settings_for(height: int, width: int) -> dict[str, Any]:
    """The MS-SSIM settings the rule gives an image size (the protocol's fixed part)."""
    scales = scales_for(height, width)
    return {
        "implementation": "pytorch-msssim 1.0.0 (_ssim per scale)",
        "image_size": [height, width],
        "window": WINDOW,
        "window_sigma": WINDOW_SIGMA,
        "scales": scales,
        "weights": weights_for(scales),
        "K": list(K),
        "data_range": DATA_RANGE,
        "dtype": "float32",
    }


def _as_images(images: np.ndarray | torch.Tensor, label: str) -> torch.Tensor:
    """uint8 N x H x W or N x 1 x H x W (numpy or torch) as a uint8 N x 1 x H x W tensor on the CPU (each batch
    of pairs becomes float32 on the device only when measured: a whole set in float32 is 4x its size)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise HeartjobsError(f"{label}: MS-SSIM takes uint8 images (data_range 255); got {x.dtype}")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise HeartjobsError(f"{label}: MS-SSIM takes N x H x W or N x 1 x H x W images; got shape {tuple(x.shape)}")
    return x.unsqueeze(1).cpu()


def ms_ssim_of_pairs(x: torch.Tensor, y: torch.Tensor, scales: int) -> torch.Tensor:
    """MS-SSIM of each pair (x[k], y[k]) of float N x 1 x H x W images of 0..255, with `scales` scales.

    pytorch-msssim 1.0.0's `ms_ssim` (size_average=False, weights cut by the rule) without its 5-scale size
    assertion: the same calls in the same order (tests/test_diversity.py checks equality), with one change
    of layout: the pairs go in as the channels of one image (1 x N x H x W). The package filters each channel
    on its own (a grouped convolution, one window per channel), so the numbers are the same, and torch's
    CPU depthwise convolution is ~6x faster than its single-channel one on a batch (measured at 256 px).
    """
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim  # ==1.0.0 in pyproject: private parts

    x, y = x.transpose(0, 1), y.transpose(0, 1)  # N x 1 x H x W -> 1 x N x H x W
    weights = x.new_tensor(weights_for(scales))
    win = _fspecial_gauss_1d(WINDOW, WINDOW_SIGMA).repeat([x.shape[1], 1, 1, 1])
    terms = []
    for level in range(scales):
        ssim_per_channel, cs = _ssim(x, y, win=win, data_range=DATA_RANGE, size_average=False, K=K)
        if level < scales - 1:
            terms.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(torch.relu(ssim_per_channel))  # (scale, 1, pair): contrast-structure terms, then full SSIM
    return torch.prod(torch.stack(terms) ** weights.view(-1, 1, 1), dim=0)[0]


def draw_pairs(n: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Index pairs i != j: every unordered pair once when `pairs` reaches n (n - 1) / 2 ("all"), else
    `pairs` drawn uniformly ("sampled": i uniform, j uniform over the other n - 1)."""
    if pairs >= n * (n - 1) // 2:
        i, j = np.triu_indices(n, k=1)
        return i, j, "all"
    i = rng.integers(0, n, size=pairs)
    j = rng.integers(0, n - 1, size=pairs)
    j = j + (j >= i)  # skip i itself: j uniform over the other n - 1 images
    return i, j, "sampled"


def mean_pairwise_ms_ssim(
    images: np.ndarray | torch.Tensor,
    *,
    pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    stream: int = 0,
    batch: int = DEFAULT_BATCH,
    label: str = "images",
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Mean and standard deviation of MS-SSIM over random pairs of distinct images of one set, with the
    pairs' protocol (n, pairs, mode, seed, stream) and the settings the rule gives the image size."""
    x = _as_images(images, label)
    n = x.shape[0]
    if n < 2:
        raise HeartjobsError(f"{label}: MS-SSIM diversity needs at least 2 images to pair; got {n}")
    if pairs < 1:
        raise HeartjobsError(f"{label}: MS-SSIM diversity needs at least 1 pair; got {pairs}")
    settings = settings_for(x.shape[2], x.shape[3])
    i, j, mode = draw_pairs(n, pairs, np.random.default_rng([seed, stream]))
    i, j = torch.from_numpy(i), torch.from_numpy(j)
    scales = settings["scales"]
    batches = (slice(k, k + batch) for k in range(0, len(i), batch))

    def on_device(index: torch.Tensor) -> torch.Tensor:
        return x[index].to(device, torch.float32)

    values = torch.cat([ms_ssim_of_pairs(on_device(i[b]), on_device(j[b]), scales).cpu() for b in batches]).double()
    return {
        "mean": float(values.mean()),
        "std": float(values.std()) if len(values) > 1 else 0.0,
        "protocol": {**settings, "n": n, "pairs": len(values), "pairs_mode": mode, "seed": seed, "stream": stream},
    }


def ms_ssim_diversity(
    generated: np.ndarray | torch.Tensor,
    real: np.ndarray | torch.Tensor,
    *,
    pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Mean pairwise MS-SSIM of the generated set and of the real set (same image size), and the ratio
    generated / real (> 1: less diverse than the real slices; near 1 / real for a collapsed set).

    Returns {"ms_ssim_generated", "ms_ssim_real", "ms_ssim_ratio", "ms_ssim_generated_std",
    "ms_ssim_real_std", "protocol": {settings, seed, "generated": {n, pairs, pairs_mode, stream},
    "real": {...}}}.
    """
    # Sizes compared before either set is measured (both are uint8 views here: no copy).
    generated, real = _as_images(generated, "generated images"), _as_images(real, "real images")
    if generated.shape[2:] != real.shape[2:]:
        raise HeartjobsError(
            f"MS-SSIM diversity: generated images are {list(generated.shape[2:])} px, "
            f"real images {list(real.shape[2:])} px"
        )
    gen = mean_pairwise_ms_ssim(
        generated, pairs=pairs, seed=seed, stream=0, batch=batch, label="generated images", device=device
    )
    ref = mean_pairwise_ms_ssim(real, pairs=pairs, seed=seed, stream=1, batch=batch, label="real images", device=device)
    per_set = ("n", "pairs", "pairs_mode", "stream")
    protocol = {k: v for k, v in gen["protocol"].items() if k not in per_set}
    protocol["generated"] = {k: gen["protocol"][k] for k in per_set}
    protocol["real"] = {k: ref["protocol"][k] for k in per_set}
    # real = 0 only if every real pair has a term clipped to 0 by relu (anticorrelated images): no ratio then.
    ratio = gen["mean"] / ref["mean"] if ref["mean"] > 0 else math.nan
    return {
        "ms_ssim_generated": gen["mean"],
        "ms_ssim_real": ref["mean"],
        "ms_ssim_ratio": ratio,
        "ms_ssim_generated_std": gen["std"],
        "ms_ssim_real_std": ref["std"],
        "protocol": protocol,
    }
