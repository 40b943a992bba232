"""Memorisation: does the generator copy its training slices?

One job: compare how close generated images come to the training set with how close real images that the
generator never saw (held-out slices, given by the caller) come to it. A generator that copies lands
closer to some training image than almost any held-out slice does; one that draws new slices does not.

Protocol (the nearest-neighbour distance test of the data-copying literature: Meehan, Chaudhuri & Dasgupta
2020 compare generated-to-training against held-out-to-training nearest distances; the "closer than the
closest 1 % of held-out images" threshold follows the distance-to-closest-record test used for synthetic
medical and tabular data):

1. d_gen[i]  = distance from generated image i to its nearest training image;
   d_held[j] = distance from held-out real image j to its nearest training image. With no held-out set
   (held_out=None: a run trained on every slice, as the thesis does), the baseline is leave-one-out: each
   training slice's distance to its nearest *other* training slice. For slices of one volume that is the
   distance a slice held out at random would have (its neighbours in the stack stay in training), so the
   threshold means the same; the record says which baseline was used.
2. threshold = the `quantile` (default 0.01) quantile of d_held, numpy's method "lower": a distance some
   held-out slice has (at n_held_out < 100 the closest one), never one interpolated between two.
3. fraction  = share of generated images strictly closer than the threshold, or exact copies (d_gen = 0,
   so that a copy counts even when the threshold itself is 0). Strictly: at small n the 1 % quantile is
   the held-out minimum, and a generator that repeats that one held-out slice (mode collapse) is not
   closer than the closest held-out slice. The held-out baseline, the same share of d_held, is about
   `quantile` by construction for large n_held_out (0 when the quantile is the minimum).
4. Flag rule: memorised when fraction > `multiple` x `quantile` (default 5 x 1 % = 5 %) AND at least
   `min_count` (default 5) generated images are below the threshold. The multiple guards against the
   binomial noise of a generator that is merely good (at n = 1000 the share of a non-copying generator
   that matches the real distribution has sd ~0.3 %); the minimum count keeps a handful of chance matches
   in a small sample from flagging.

Spaces: pixel space (images of any integer or float dtype, flattened to float vectors, Euclidean L2 in
grey-level units) and any feature space the caller passes as N x d arrays (the Inception features, the
radiomic features z-scored as FRD does: the caller prepares them, this module measures L2 between rows).
Rows with a non-finite value (radiomics gives NaN rows for constant images) are left out and counted.

The search is exact and chunked: queries and references are cut into blocks of about `block_mib` each,
so 3000 x 3307 images at 256 px (65536-d) need a few hundred MiB. The block distances use
|q - c|^2 + |r - c|^2 - 2 (q - c).(r - c) around the training mean c (centring keeps the float32 rounding
of pixel vectors small); the distance reported for each chosen pair is then recomputed directly in float64,
so the reported numbers are exact and only an exact tie within float32 rounding could pick a different but
equally near neighbour. Feature spaces are searched in float64 throughout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

QUANTILE = 0.01
MULTIPLE = 5.0
MIN_COUNT = 5
PAIRS = 16
BLOCK_MIB = 256
REPORTED_QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5)


def _rows(array, name: str) -> np.ndarray:
    """N x ... -> N x d (a view where possible); images N x H x W or N x C x H x W become pixel vectors."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim < 2 or len(array) == 0:
        raise ValueError(f"{name}: expected N x d features or N x [C x] H x W images, got shape {array.shape}")
    return array.reshape(len(array), -1)


def _finite_rows(rows: np.ndarray) -> np.ndarray:
    """Indices of the rows without NaN or inf (all rows for integer images)."""
    if np.issubdtype(rows.dtype, np.integer):
        return np.arange(len(rows))
    return np.flatnonzero(np.isfinite(rows).all(axis=1))


def nearest_neighbours(
    queries,
    references,
    *,
    block_mib: float = BLOCK_MIB,
    exact_search: bool | None = None,
    device: torch.device | str = "cpu",
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the index of its nearest reference row (L2) and that distance (float64).
    exclude_self: the queries are the references, and each row's nearest *other* row is wanted (leave one
    out).

    queries N x ..., references M x ... (flattened to vectors). `exact_search` runs the block search in
    float64; by default so for float inputs (features) and in float32 for integer inputs (pixels, where the
    reported distance is recomputed in float64 anyway). No row may hold NaN (memorisation() drops them).
    """
    q, r = _rows(queries, "queries"), _rows(references, "references")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} values per row, references {r.shape[1]}")
    integer = np.issubdtype(q.dtype, np.integer) and np.issubdtype(r.dtype, np.integer)
    dtype = torch.float64 if (exact_search if exact_search is not None else not integer) else torch.float32
    dim = q.shape[1]
    rows = max(1, int(block_mib * 2**20 // (dim * (8 if dtype == torch.float64 else 4))))
    centre = torch.from_numpy(r.mean(axis=0, dtype=np.float64)).to(device, dtype)

    def block(a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # copy=True: a float64 block would otherwise share the caller's array, which `-=` must not touch
        x = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype, copy=True)
        x -= centre  # in place: one block's worth of memory, not two
        return x, (x * x).sum(1)

    best = torch.full((len(q),), float("inf"), dtype=dtype, device=device)
    index = torch.zeros(len(q), dtype=torch.long, device=device)
    for qs in range(0, len(q), rows):
        qb, qn = block(q[qs : qs + rows])
        for rs in range(0, len(r), rows):
            rb, rn = block(r[rs : rs + rows])
            d2 = torch.addmm(qn[:, None] + rn[None, :], qb, rb.T, alpha=-2.0)
            if exclude_self:  # a row is not its own neighbour
                rows_q = torch.arange(qs, qs + len(qb), device=device)
                same = rows_q[:, None] == torch.arange(rs, rs + len(rb), device=device)[None, :]
                d2.masked_fill_(same, float("inf"))
            value, where = d2.min(1)
            better = value < best[qs : qs + rows]
            best[qs : qs + rows] = torch.where(better, value, best[qs : qs + rows])
            index[qs : qs + rows] = torch.where(better, where + rs, index[qs : qs + rows])
    index = index.cpu().numpy()
    # The reported distance of each chosen pair, directly and in float64 (no cancellation).
    distance = np.empty(len(q), dtype=np.float64)
    step = max(1, rows // 2)
    for qs in range(0, len(q), step):
        diff = q[qs : qs + step].astype(np.float64) - r[index[qs : qs + step]]
        distance[qs : qs + step] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return index, distance


# The last training sets' leave-one-out distances, by the very object given: a measurement's repeats share
# their training set in each space, and its baseline (3307 x 3307 searches at 65536-d, most of pixel
# memorisation's cost at 256 px: docs/performance.md) depends on nothing else. One entry per space a
# measurement searches (pixels, features; the radiomic rows are z-scored anew each time and miss).
_BASELINES: list[tuple[object, tuple, np.ndarray]] = []
_KEPT_BASELINES = 3


def _leave_one_out(given, rows: np.ndarray, **search) -> np.ndarray:
    """Each row's distance to its nearest other row, computed once per training set object."""
    for kept, shape, distances in _BASELINES:
        if kept is given and shape == rows.shape:
            return distances
    _, distances = nearest_neighbours(rows, rows, exclude_self=True, **search)
    _BASELINES[:] = [(given, rows.shape, distances), *_BASELINES[: _KEPT_BASELINES - 1]]
    return distances


def _quantiles(distances: np.ndarray) -> dict[str, float]:
    return {f"q{round(p * 100):02d}": float(np.quantile(distances, p)) for p in REPORTED_QUANTILES}


def memorisation(
    generated,
    training,
    held_out,
    *,
    space: str = "pixel",
    quantile: float = QUANTILE,
    multiple: float = MULTIPLE,
    min_count: int = MIN_COUNT,
    pairs: int = PAIRS,
    block_mib: float = BLOCK_MIB,
    device: torch.device | str = "cpu",
) -> dict:
    """The memorisation test of the module docstring in one space.

    generated, training, held_out: images (N x [C x] H x W, pixel space) or features (N x d) of the same
    width (held_out None: the leave-one-out baseline of the module docstring); `space` names the space
    in the result ("pixel", "inception-2048", "radiomics"...). Returns a plain dict: the counts, the
    threshold, the generated fraction and held-out baseline below it, the flag with its rule, the
    distance quantiles of both sets, and the `pairs` closest (generated, training) pairs (indices into
    the arrays as given) with their distances, closest first.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    sets = {"generated": _rows(generated, "generated"), "training": _rows(training, "training")}
    leave_one_out = held_out is None
    sets["held_out"] = sets["training"] if leave_one_out else _rows(held_out, "held_out")
    widths = {name: rows.shape[1] for name, rows in sets.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"the three sets differ in width: {widths}")
    kept = {name: _finite_rows(rows) for name, rows in sets.items()}
    for name, idx in kept.items():
        if len(idx) == 0:
            raise ValueError(f"{name}: no row without NaN or inf")
    # Only copy when rows are dropped: the pixel sets at 256 px are large.
    used = {n: rows if len(kept[n]) == len(rows) else rows[kept[n]] for n, rows in sets.items()}

    gen_index, gen_distance = nearest_neighbours(
        used["generated"], used["training"], block_mib=block_mib, device=device
    )
    if leave_one_out:
        held_distance = _leave_one_out(training, used["training"], block_mib=block_mib, device=device)
    else:
        _, held_distance = nearest_neighbours(used["held_out"], used["training"], block_mib=block_mib, device=device)
    threshold = float(np.quantile(held_distance, quantile, method="lower"))
    below = (gen_distance < threshold) | (gen_distance == 0)
    count = int(below.sum())
    fraction = count / len(gen_distance)
    baseline = float(((held_distance < threshold) | (held_distance == 0)).mean())
    flagged = bool(fraction > multiple * quantile and count >= min_count)

    closest = np.argsort(gen_distance, kind="stable")[:pairs]
    pair_list = [
        {
            "generated": int(kept["generated"][i]),
            "training": int(kept["training"][gen_index[i]]),
            "distance": float(gen_distance[i]),
        }
        for i in closest
    ]
    return {
        "space": space,
        "n_generated": len(sets["generated"]),
        "n_training": len(sets["training"]),
        "n_held_out": len(sets["held_out"]),
        "n_generated_used": len(kept["generated"]),
        "n_training_used": len(kept["training"]),
        "n_held_out_used": len(kept["held_out"]),
        "dims": int(widths["generated"]),
        "threshold": threshold,
        "count_below": count,
        "fraction_below": float(fraction),
        "held_out_fraction_below": baseline,
        "ratio_to_quantile": float(fraction / quantile),
        "held_out_exact_copies": int((held_distance == 0).sum()),
        "generated_exact_copies": int((gen_distance == 0).sum()),
        "memorised": flagged,
        "generated_quantiles": _quantiles(gen_distance),
        "held_out_quantiles": _quantiles(held_distance),
        "pairs": pair_list,
        "protocol": {
            "distance": "L2",
            "baseline": "leave-one-out training slices" if leave_one_out else "held-out slices",
            "threshold": f"quantile {quantile} of held-out nearest-training distances (numpy method lower)",
            "quantile": quantile,
            "below": "distance < threshold, or 0 (an exact copy)",
            "rule": f"memorised when fraction_below > {multiple} x {quantile} and count_below >= {min_count}",
            "multiple": multiple,
            "min_count": min_count,
            "pairs": pairs,
        },
    }


def _display(image) -> np.ndarray:
    """One image as H x W (gray) or H x W x 3 for imshow."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    return image


def plot_pairs(result: dict, generated, training, path: Path, *, k: int = 8, per_row: int = 4) -> Path:
    """The k closest pairs of a pixel-space (or any) memorisation result drawn as "generated | nearest
    training slice" with their distances, `per_row` pairs a row; written atomically as PNG at `path`.

    generated and training are the image arrays the result's indices refer to (N x [C x] H x W).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from heartjobs.plots import save_figure

    shown = result["pairs"][:k]
    if not shown:
        raise ValueError("the result holds no pairs to draw")
    per_row = min(per_row, len(shown))
    n_rows = -(-len(shown) // per_row)
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(2.0 * 2 * per_row, 2.3 * n_rows), dpi=100, squeeze=False)
    # One grey scale for all panels, so that a copy looks identical and brightness differences show.
    vmax = 255 if np.issubdtype(np.asarray(generated).dtype, np.integer) else None
    for ax in axes.flat:
        ax.set_axis_off()
    for n, pair in enumerate(shown):
        row, col = divmod(n, per_row)
        left, right = axes[row][2 * col], axes[row][2 * col + 1]
        left.imshow(_display(generated[pair["generated"]]), cmap="gray", vmin=0, vmax=vmax)
        right.imshow(_display(training[pair["training"]]), cmap="gray", vmin=0, vmax=vmax)
        # red: below the threshold, i.e. closer than the closest held-out slices come
        color = "tab:red" if pair["distance"] < result["threshold"] or pair["distance"] == 0 else "black"
        left.set_title(f"gen {pair['generated']}, d = {pair['distance']:.4g}", fontsize=8, color=color)
        right.set_title(f"train {pair['training']}", fontsize=8)
    flag = "MEMORISED" if result["memorised"] else "not memorised"
    fig.suptitle(
        f"closest pairs, generated | nearest training slice ({result['space']}): "
        f"{result['fraction_below']:.1%} below the {result['protocol']['quantile']:.0%} threshold "
        f"{result['threshold']:.4g} of {result['protocol'].get('baseline', 'held-out slices')}, {flag}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)
