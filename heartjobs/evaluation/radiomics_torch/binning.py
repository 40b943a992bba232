"""pyradiomics' fixed-bin-width discretisation (imageoperations.binImage with binWidth), for a batch of
images on their device, equal to it level for level.

pyradiomics bins each image from its own minimum: edges numpy.arange(min - min % W, max + 2 W, W) and
numpy.digitize against them. The edges are computed here with those very numpy calls (a few hundred
numbers per image, on the host), so that a value lying on an edge up to round-off falls in the bin it
falls in under pyradiomics; the levels are then found on the device from a first guess by division,
corrected against the exact edges.
"""

from __future__ import annotations

import numpy as np
import torch

BIN_WIDTH = 5


def bin_edges(minimum: np.float64, maximum: np.float64, width: float = BIN_WIDTH) -> np.ndarray:
    """pyradiomics' getBinEdges for a fixed bin width, with its numpy operations."""
    low = minimum - (minimum % width)
    high = maximum + 2 * width
    edges = np.arange(low, high, width)
    if len(edges) == 1:  # a flat region: one bin around its value, as pyradiomics makes it
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def discretize(image: torch.Tensor, mask: torch.Tensor, width: float = BIN_WIDTH) -> torch.Tensor:
    """Grey levels 1..Ng of B x H x W float64 images inside their masks (0 outside), as binImage gives them.
    Every mask must hold at least one voxel."""
    full = bool(mask.all())  # FRD's slices: the whole image, no masking needed
    if full:
        lows, highs = image.flatten(1).aminmax(dim=1)
    else:
        inf = torch.tensor(float("inf"), dtype=image.dtype, device=image.device)
        lows = torch.where(mask, image, inf).flatten(1).amin(1)
        highs = torch.where(mask, image, -inf).flatten(1).amax(1)
    extremes = torch.stack([lows, highs], 1).cpu().numpy()  # one small transfer per batch
    edges = [bin_edges(np.float64(low), np.float64(high), width) for low, high in extremes]
    count = max(len(e) for e in edges)
    padded = np.full((len(edges), count + 1), np.inf)
    for row, e in zip(padded, edges, strict=True):
        row[: len(e)] = e
    table = torch.from_numpy(padded).to(image.device)
    starts = table[:, :1, None]
    steps = table[:, 1:2, None] - starts
    # first guess of how many edges lie at or below each value, then exact against the edges (digitize)
    guess = torch.floor((image - starts) / steps).clamp(0, count - 1).long() + 1
    flat = guess.flatten(1)
    below = torch.gather(table, 1, flat - 1).view_as(image)  # the edge the guess puts at or below
    above = torch.gather(table, 1, flat).view_as(image)  # the next edge, which must lie above
    guess -= (image < below).view(torch.uint8)
    guess += (image >= above).view(torch.uint8)
    return guess if full else torch.where(mask, guess, torch.zeros_like(guess))
