"""pyradiomics' GLSZM (grey level size zone matrix) features of a batch of discretised 2D images, in PyTorch.

The one job: `features(levels, mask)` gives, per image, the 16 values pyradiomics 3.0.1's RadiomicsGLSZM
returns under FRD v1's settings (force2D, binWidth 5), equal to 1e-9 relative, on the input's device, with
no per-image Python loop.

What pyradiomics does (read from radiomics/glszm.py and probed on radiomics' _cmatrices.calculate_glszm):

- A zone is a connected set of mask voxels of one grey level, connected by 8-connectivity in the plane
  (infinity-norm distance 1; diagonal neighbours join a zone, also across a masked-out corner). Voxels
  outside the mask never belong to or join a zone.
- Rows of grey levels absent from the ROI are deleted and the grey-level VALUES (`grayLevels`, not 1..Ng')
  enter the formulas; columns of absent zone sizes are deleted too, but the size VALUES stay in `jvector`,
  so every formula is a sum over zones of a function of (level, size), except GLN/SZN (squares of the
  per-level/per-size zone counts) and ZoneEntropy (over the cells P(level, size) of the matrix).
- ZoneEntropy is -sum p log2(p + eps) with eps = numpy.spacing(1), over nonzero cells only, so one zone
  of one level gives -log2(1 + eps) = -3.2e-16, not 0.
- Nz and Np are set to 1 when 0 (an empty ROI); pyradiomics cannot reach that (it refuses an empty mask
  before), so an image with an empty mask gets NaN here.
- A 1 x 1 image makes calculate_glszm raise ("Error getting angle count": force2D finds no angle), so
  pyradiomics gives no values at all; here it is one zone of size 1 (FRD's minimumROIDimensions 2 keeps
  such an image out anyway).

How: each image row splits into runs (maximal horizontal stretches of equal level in the mask); runs are
the nodes of a graph whose edges join 8-adjacent runs of equal level in consecutive rows, and the zones
are its connected components, found for all images at once by min-label hooking with pointer jumping
(parent[max(pu, pv)] = min(pu, pv) over all edges, then parent = parent[parent]). Hooking a node's current
parent (not just the node) lets a component's labels collapse in O(log size) rounds even for zones that
snake through the image (a one-pixel spiral, a comb, a serpentine), where plain neighbour propagation would
take O(H * W) rounds. The features then come from the nonzero cells (image, level, size, count) of the
matrices, a few per cent as many as the zones in real images.
"""

from __future__ import annotations

import torch

__all__ = ["FEATURES", "features", "zones"]

# pyradiomics' order: execute() enables all features in inspect.getmembers order, i.e. alphabetical
FEATURES = (
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelZoneEmphasis",
    "LargeAreaEmphasis",
    "LargeAreaHighGrayLevelEmphasis",
    "LargeAreaLowGrayLevelEmphasis",
    "LowGrayLevelZoneEmphasis",
    "SizeZoneNonUniformity",
    "SizeZoneNonUniformityNormalized",
    "SmallAreaEmphasis",
    "SmallAreaHighGrayLevelEmphasis",
    "SmallAreaLowGrayLevelEmphasis",
    "ZoneEntropy",
    "ZonePercentage",
    "ZoneVariance",
)

_EPS = 2.220446049250313e-16  # numpy.spacing(1), pyradiomics' eps in ZoneEntropy


# dense (image, level, size) histogram of the zones up to this many bins; larger zones are counted by sorting
_DENSE_BINS = 1 << 21
_DENSE_SIZES = 64


def _components(u: torch.Tensor, v: torch.Tensor, n: int, check_every: int) -> tuple[torch.Tensor, int]:
    """Connected components of the graph on nodes 0..n-1 with edges (u[k], v[k]): (each node's root, the
    smallest node of its component; the number of rounds run, the last one the one that changed nothing).

    Every round hooks each edge's two current parents together (the larger onto the smaller, through
    scatter amin, so parent[x] <= x always holds and no cycle can form), then makes two pointer jumps
    (parent = parent[parent]; two per round took the fewest seconds on real batches). Both steps only
    lower labels, so `parent` equal to its value `check_every` rounds before means every round between
    changed nothing: each edge's ends share a parent and every parent is a root, the fixed point. One
    device -> host sync per `check_every` rounds."""
    parent = torch.arange(n, device=u.device)
    rounds = 0
    if u.numel() == 0:
        return parent, rounds
    while True:
        before = parent
        for _ in range(check_every):
            pu, pv = parent.index_select(0, u), parent.index_select(0, v)
            parent = parent.scatter_reduce(0, torch.maximum(pu, pv), torch.minimum(pu, pv), "amin")
            parent = parent.index_select(0, parent)
            parent = parent.index_select(0, parent)
            rounds += 1
        if torch.equal(parent, before):
            return parent, rounds


def _label(levels: torch.Tensor, mask: torch.Tensor, check_every: int | None) -> dict:
    """The zones as a forest over runs: for every run (maximal horizontal stretch of one level in the mask,
    numbered in raster order over the batch) its first pixel's flat index, its root run (the first run of its
    zone) and, at a root, the zone's size; and the number of hook-and-jump rounds."""
    if levels.dim() != 3 or levels.shape != mask.shape:
        raise ValueError(f"levels and mask must both be B x H x W, got {tuple(levels.shape)}, {tuple(mask.shape)}")
    device = levels.device
    if check_every is None:
        # a sync is free on the CPU; on a GPU a few extra (no-op) rounds cost less than a sync each round
        check_every = 1 if device.type == "cpu" else 4
    batch, height, width = levels.shape
    n_pixels = batch * height * width
    lv = levels.to(torch.int64)
    act = mask.to(torch.bool)
    # same[b, r, c]: pixel (r, c) continues the run of (r, c - 1): both in the mask, same level
    same = torch.zeros_like(act)
    same[:, :, 1:] = act[:, :, 1:] & act[:, :, :-1] & (lv[:, :, 1:] == lv[:, :, :-1])
    start = (act & ~same).reshape(-1)
    # a run is contiguous in raster order and every mask pixel up to the next run's start belongs to it, so
    # a running count of run starts numbers every pixel's run, and one of mask pixels gives the run lengths
    run_of = torch.cumsum(start, 0) - 1
    start_pixel = torch.nonzero(start).squeeze(1)
    n_runs = start_pixel.numel()
    in_mask_before = torch.nn.functional.pad(torch.cumsum(act.reshape(-1), 0), (1, 0))
    bounds = in_mask_before.index_select(0, torch.nn.functional.pad(start_pixel, (0, 1), value=n_pixels))
    run_length = bounds[1:] - bounds[:-1]

    # edges from (r, c) to (r + 1, c + dc), dc = -1, 0, 1: both in the mask and of one level; one edge per
    # pair of runs and direction (an edge whose ends both continue their runs repeats the one to its left)
    if height > 1:
        up_lv, up_act, up_same = lv[:, :-1], act[:, :-1], same[:, :-1]
        down_lv, down_act, down_same = lv[:, 1:], act[:, 1:], same[:, 1:]
        ok = torch.zeros(3, batch, height - 1, width, dtype=torch.bool, device=device)
        for slot, dc in enumerate((-1, 0, 1)):
            lo, hi = max(0, -dc), width - max(0, dc)  # columns c of the upper pixel with c + dc in range
            if hi <= lo:
                continue
            edge = (
                up_act[:, :, lo:hi]
                & down_act[:, :, lo + dc : hi + dc]
                & (up_lv[:, :, lo:hi] == down_lv[:, :, lo + dc : hi + dc])
            )
            ok[slot, :, :, lo:hi] = edge
            repeat = edge[:, :, :-1] & up_same[:, :, lo + 1 : hi] & down_same[:, :, lo + 1 + dc : hi + dc]
            ok[slot, :, :, lo + 1 : hi] &= ~repeat
        flat = torch.nonzero(ok.reshape(-1)).squeeze(1)
        per_slot = batch * (height - 1) * width
        slot = torch.div(flat, per_slot, rounding_mode="floor")
        within = flat - slot * per_slot  # b * (H - 1) * W + r * W + c
        upper = within + torch.div(within, (height - 1) * width, rounding_mode="floor") * width
        u = run_of.index_select(0, upper)
        v = run_of.index_select(0, upper + width + slot - 1)
    else:
        u = v = torch.zeros(0, dtype=torch.int64, device=device)

    # label only the runs that have an edge (in real images most zones are one run); renumbering them in
    # order keeps every root the first run of its zone
    linked = torch.zeros(n_runs, dtype=torch.bool, device=device)
    linked[u] = True
    linked[v] = True
    linked_runs = torch.nonzero(linked).squeeze(1)
    renumber = torch.cumsum(linked, 0) - 1
    linked_root, rounds = _components(
        renumber.index_select(0, u), renumber.index_select(0, v), linked_runs.numel(), check_every
    )
    root = torch.arange(n_runs, device=device)
    root[linked_runs] = linked_runs.index_select(0, linked_root)
    size = torch.zeros(n_runs, dtype=torch.int64, device=device).index_add_(0, root, run_length)
    return {"start_pixel": start_pixel, "root": root, "size": size, "rounds": rounds}


def zones(levels: torch.Tensor, mask: torch.Tensor, check_every: int | None = None) -> dict:
    """The zones of a batch: {'image', 'level', 'size'}: one int64 entry per zone (its image index, grey
    level, number of pixels), and 'rounds': the number of hook-and-jump rounds the labelling took."""
    forest = _label(levels, mask, check_every)
    root = forest["root"]
    is_root = torch.nonzero(root == torch.arange(root.numel(), device=root.device)).squeeze(1)
    zone_pixel = forest["start_pixel"].index_select(0, is_root)
    return {
        "image": torch.div(zone_pixel, levels.shape[1] * levels.shape[2], rounding_mode="floor"),
        "level": levels.reshape(-1).to(torch.int64).index_select(0, zone_pixel),
        "size": forest["size"].index_select(0, is_root),
        "rounds": forest["rounds"],
    }


def _cells(levels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The nonzero cells of every image's size zone matrix: (image, level, size, number of zones) per cell.

    Zones up to a few dozen pixels (nearly all in real images) are counted in a dense bincount over
    (image, level, size); the few larger ones by sorting."""
    batch, height, width = levels.shape
    device = levels.device
    forest = _label(levels, mask, None)
    root, size, start_pixel = forest["root"], forest["size"], forest["start_pixel"]
    node_image = torch.div(start_pixel, height * width, rounding_mode="floor")
    node_level = levels.reshape(-1).to(torch.int64).index_select(0, start_pixel)
    is_root = root == torch.arange(root.numel(), device=device)
    n_levels = int(levels.max()) + 1
    small = max(1, min(_DENSE_SIZES, _DENSE_BINS // (batch * n_levels)))
    dense = batch * n_levels * small
    in_dense = is_root & (size <= small)
    key = torch.where(in_dense, (node_image * n_levels + node_level) * small + size - 1, dense)
    histogram = torch.bincount(key, minlength=dense + 1)[:dense]
    cell = torch.nonzero(histogram).squeeze(1)
    count = histogram.index_select(0, cell)
    cell_size = cell % small + 1
    cell_level = torch.div(cell, small, rounding_mode="floor")
    large = torch.nonzero(is_root & (size > small)).squeeze(1)
    if large.numel():
        sizes = height * width + 1
        key = (node_image * n_levels + node_level).index_select(0, large) * sizes + size.index_select(0, large)
        large_cell, large_count = torch.unique(key, return_counts=True)
        cell_size = torch.cat([cell_size, large_cell % sizes])
        cell_level = torch.cat([cell_level, torch.div(large_cell, sizes, rounding_mode="floor")])
        count = torch.cat([count, large_count])
    cell_image = torch.div(cell_level, n_levels, rounding_mode="floor")
    return cell_image, cell_level % n_levels, cell_size, count, n_levels


def features(levels: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """pyradiomics' GLSZM features of each image: levels B x H x W int64 (1..Ng in the mask), mask B x H x W
    bool -> {feature name: B float64 values}, in pyradiomics' order; NaN for an image with an empty mask."""
    batch, height, width = levels.shape
    device = levels.device
    image, level_i, size_i, count_i, n_levels = _cells(levels, mask)
    level, size, count = level_i.to(torch.float64), size_i.to(torch.float64), count_i.to(torch.float64)

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.float64, device=device).index_add_(0, image, values)

    n_zones = per_image(count)
    n_pixels = mask.reshape(batch, -1).sum(1).to(torch.float64)
    empty = n_pixels == 0
    # GLN and SZN: squares of the zone counts per (image, level) and per (image, size); exact in float64
    per_level = torch.bincount(image * n_levels + level_i, weights=count, minlength=batch * n_levels)
    gln_sum = (per_level**2).view(batch, n_levels).sum(1)
    sizes = height * width + 1
    per_size = torch.bincount(image * sizes + size_i, weights=count, minlength=batch * sizes)
    szn_sum = (per_size**2).view(batch, sizes).sum(1)
    p = count / n_zones[image]  # the normalised matrix's nonzero cells
    entropy = -per_image(p * torch.log2(p + _EPS))
    level_mean = per_image(p * level)
    size_mean = per_image(p * size)
    level2, size2 = level**2, size**2
    out = {
        "GrayLevelNonUniformity": gln_sum / n_zones,
        "GrayLevelNonUniformityNormalized": gln_sum / n_zones**2,
        "GrayLevelVariance": per_image(p * (level - level_mean[image]) ** 2),
        "HighGrayLevelZoneEmphasis": per_image(count * level2) / n_zones,
        "LargeAreaEmphasis": per_image(count * size2) / n_zones,
        "LargeAreaHighGrayLevelEmphasis": per_image(count * level2 * size2) / n_zones,
        "LargeAreaLowGrayLevelEmphasis": per_image(count * size2 / level2) / n_zones,
        "LowGrayLevelZoneEmphasis": per_image(count / level2) / n_zones,
        "SizeZoneNonUniformity": szn_sum / n_zones,
        "SizeZoneNonUniformityNormalized": szn_sum / n_zones**2,
        "SmallAreaEmphasis": per_image(count / size2) / n_zones,
        "SmallAreaHighGrayLevelEmphasis": per_image(count * level2 / size2) / n_zones,
        "SmallAreaLowGrayLevelEmphasis": per_image(count / (level2 * size2)) / n_zones,
        "ZoneEntropy": entropy,
        "ZonePercentage": n_zones / n_pixels,
        "ZoneVariance": per_image(p * (size - size_mean[image]) ** 2),
    }
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
    return {name: torch.where(empty, nan, out[name]) for name in FEATURES}
