"""Precision, recall, density and coverage of generated images against real ones, from two feature sets:
fidelity (are the samples realistic?) and diversity (do they cover the real variety?) as separate numbers.

Protocol: the k-nearest-neighbour manifolds of Kynkäänniemi et al. 2019 ("Improved precision and recall
metric for assessing generative models": precision, recall) and Naeem et al. 2020 ("Reliable fidelity and
diversity metrics for generative models": density, coverage), computed exactly as the authors' package
`prdc` 0.2 (`prdc.compute_prdc`) computes them, k = 5 by default (the papers' and the package's choice):

- each real feature r_i gets a radius, the distance to its k-th nearest real neighbour (itself not counted);
  each generated feature g_j gets the same among the generated ones;
- precision = share of generated g_j inside some real ball (d(r_i, g_j) < radius_i);
- recall    = share of real r_i inside some generated ball (d(r_i, g_j) < radius_j);
- density   = mean over g_j of (number of real balls holding g_j) / k (about 1 when the sets match;
  above 1 where generated samples crowd dense real regions);
- coverage  = share of real r_i whose nearest generated feature lies inside its ball.

The distances are the ones prdc gets from scikit-learn (pairwise_distances, euclidean): |x|^2 + |y|^2 -
2 x.y in float64, clipped at 0, rounded to float32 when both inputs are float32 (else kept in float64),
square root in that type, self-distances set to 0. Every comparison is strict (<). Reproducing that
arithmetic (not a more exact one) makes the four numbers equal prdc's on the same features
(tests/test_manifold.py checks to 1e-6), ties included. Unlike prdc the N x M matrices are never held
whole: the real rows go in chunks and each chunk's contribution is accumulated, so 3000 x 3000 features of
2048 dims need a few hundred MB rather than several GB of distance matrices and sort copies.

Radiomic features (heartjobs.evaluation.radiomics) live on wildly different scales; `radiomic_space`
z-scores them as FRD does (heartjobs.evaluation.radiomics.frechet_radiomics_distance, frd-score's v1
pipeline) so that PRDC measures in the same space FRD does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from heartjobs.errors import HeartjobsError

if TYPE_CHECKING:
    from .radiomics import RadiomicFeatures

DEFAULT_K = 5  # Kynkäänniemi et al. 2019 and Naeem et al. 2020 (and prdc's README) use k = 5
# Real rows per chunk: chunk x max(N, M) float64 distances at a time (1024 x 3000 x 8 B = 25 MB, plus
# the float32 copy and the comparison masks); BLAS still sees matrices large enough to run at full speed.
DEFAULT_CHUNK = 1024


def _as_features(x: Any, label: str, space: str) -> np.ndarray:
    """A 2-D numpy array of finite values from a numpy array or torch tensor (one-line errors otherwise)."""
    if hasattr(x, "detach"):  # a torch tensor: no torch import needed here
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise HeartjobsError(f"PRDC ({space}): the {label} features must be N x D, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise HeartjobsError(f"PRDC ({space}): the {label} features must be real numbers, got {x.dtype}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise HeartjobsError(
            f"PRDC ({space}): {bad} of {len(x)} {label} feature rows hold NaN or Inf (drop them first; "
            "radiomic features: radiomic_space)"
        )
    return x


def _distances(
    x: np.ndarray, xx: np.ndarray, y: np.ndarray, yy: np.ndarray, dtype: type, self_offset: int | None = None
) -> np.ndarray:
    """Euclidean distances between the rows of x and y as scikit-learn computes them for prdc: -2 x.y + |x|^2
    + |y|^2 in float64 (in that order), clipped at 0, cast to `dtype`, square root in `dtype`. self_offset:
    x is rows self_offset.. of y itself; those self-distances are set to 0 (sklearn does where X is Y)."""
    d = -2 * (x @ y.T)
    d += xx[:, None]
    d += yy[None, :]
    d = d.astype(dtype, copy=False)
    np.maximum(d, 0, out=d)
    if self_offset is not None:
        rows = np.arange(len(x))
        d[rows, rows + self_offset] = 0
    np.sqrt(d, out=d)
    return d


def _radii(x: np.ndarray, xx: np.ndarray, k: int, dtype: type, chunk: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row: the (k+1)-th smallest distance, the row's own 0
    included (prdc's get_kth_value with k + 1; np.partition gives the same value, ties or not)."""
    radii = np.empty(len(x), dtype)
    # a copy on the right: numpy computes x @ x.T of one buffer with BLAS syrk, whose round-off differs from
    # the gemm sklearn runs (on column slices), and a distance that ties a radius must round the same way
    right = x.copy()
    for start in range(0, len(x), chunk):
        d = _distances(x[start : start + chunk], xx[start : start + chunk], right, xx, dtype, self_offset=start)
        radii[start : start + chunk] = np.partition(d, k, axis=1)[:, k]
    return radii


def prdc(
    real: Any,
    generated: Any,
    k: int = DEFAULT_K,
    *,
    space: str = "features",
    chunk: int = DEFAULT_CHUNK,
) -> dict:
    """Precision, recall, density and coverage of `generated` (M x D) against `real` (N x D), numpy arrays or
    torch tensors, equal to prdc.compute_prdc(real, generated, k). Both float32: prdc's float32 arithmetic;
    otherwise float64. `space` names the feature space for the record and the error messages ("inception",
    "radiomics", ...). Returns plain floats and the protocol: k, n_real, n_generated, dims, space."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise HeartjobsError(f"PRDC ({space}): k must be a whole number >= 1, got {k!r}")
    k = int(k)
    if not isinstance(chunk, int) or chunk < 1:
        raise HeartjobsError(f"PRDC ({space}): chunk must be a whole number >= 1, got {chunk!r}")
    # prdc(x, x): sklearn sees X is Y and sets the cross distances d(x_i, x_i) to 0, not to round-off
    same = real is generated
    real = _as_features(real, "real", space)
    generated = _as_features(generated, "generated", space)
    if real.shape[1] != generated.shape[1]:
        raise HeartjobsError(
            f"PRDC ({space}): the real features have {real.shape[1]} dims, the generated ones {generated.shape[1]}"
        )
    for label, x in (("real", real), ("generated", generated)):
        # a k-th nearest neighbour other than the sample itself needs k + 1 samples
        if len(x) <= k:
            raise HeartjobsError(
                f"PRDC ({space}): {len(x)} {label} samples, but k = {k} nearest neighbours need at least {k + 1}"
            )
    # sklearn's rule (check_pairwise_arrays): float32 only when both are float32, else float64
    dtype = np.float32 if real.dtype == generated.dtype == np.float32 else np.float64
    # the products and norms are always float64 (sklearn upcasts float32 chunks), the distances `dtype`
    real64 = real.astype(np.float64, copy=False)
    generated64 = generated.astype(np.float64, copy=False)
    real_norms = np.einsum("ij,ij->i", real64, real64)  # sklearn's row_norms(squared=True)
    generated_norms = np.einsum("ij,ij->i", generated64, generated64)

    if np.shares_memory(real64, generated64):  # no syrk in the cross pass either (see _radii)
        generated64 = generated64.copy()
    real_radii = _radii(real64, real_norms, k, dtype, chunk)
    generated_radii = _radii(generated64, generated_norms, k, dtype, chunk)

    # one pass over the real rows: per real row (recall, coverage) directly, per generated column
    # (precision, density) accumulated over the chunks
    in_real_balls = np.zeros(len(generated), np.int64)  # how many real balls hold each generated sample
    real_in_generated = np.zeros(len(real), bool)
    covered = np.zeros(len(real), bool)
    for start in range(0, len(real), chunk):
        stop = start + chunk
        d = _distances(
            real64[start:stop], real_norms[start:stop], generated64, generated_norms, dtype, start if same else None
        )
        inside = d < real_radii[start:stop, None]
        in_real_balls += inside.sum(axis=0)
        real_in_generated[start:stop] = (d < generated_radii[None, :]).any(axis=1)
        covered[start:stop] = d.min(axis=1) < real_radii[start:stop]
    return {
        "precision": float((in_real_balls > 0).mean()),
        "recall": float(real_in_generated.mean()),
        # prdc: (1 / k) * counts.mean(); the same division order keeps the last bit equal
        "density": float((1.0 / float(k)) * in_real_balls.mean()),
        "coverage": float(covered.mean()),
        "k": k,
        "n_real": len(real),
        "n_generated": len(generated),
        "dims": int(real.shape[1]),
        "space": space,
    }


def radiomic_space(
    real: RadiomicFeatures | np.ndarray, generated: RadiomicFeatures | np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Radiomic features z-scored as FRD does (frechet_radiomics_distance without drop_degenerate, frd-score's
    v1 pipeline): rows holding a NaN dropped (constant images), float32, each column z-scored with the real
    set's mean and std (frd-score's z_score_normalize with the real set as base distribution), and the
    columns non-finite in either set after that dropped (a zero std). Returns (real, generated, protocol):
    the float32 arrays PRDC then compares, and n_real_used, n_generated_used (rows kept) and features_used."""
    from frd_score import frd

    sets = [np.asarray(getattr(x, "values", x), dtype=np.float64) for x in (real, generated)]
    for label, x in zip(("real", "generated"), sets, strict=True):
        if x.ndim != 2:
            raise HeartjobsError(f"PRDC (radiomics): the {label} features must be N x F, got shape {x.shape}")
    if sets[0].shape[1] != sets[1].shape[1]:
        raise HeartjobsError(
            f"PRDC (radiomics): the real features have {sets[0].shape[1]} columns, the generated ones "
            f"{sets[1].shape[1]} (different pyradiomics settings?)"
        )
    names = [getattr(x, "names", None) for x in (real, generated)]
    if None not in names and names[0] != names[1]:
        raise HeartjobsError("PRDC (radiomics): the real and generated feature lists differ")
    # FRD's very steps, layout included: its column selection (all columns here, as without drop_degenerate)
    # leaves Fortran-ordered arrays, and nanmean sums a column of those in another order than of C-ordered
    # ones, up to 1e-4 sd apart on the large-valued features (energy, RMS)
    everything = np.ones(sets[0].shape[1], bool)
    kept = [x[~np.isnan(x).any(axis=1)][:, everything].astype(np.float32) for x in sets]
    if len(kept[0]) < 2:
        # a std needs two real rows; fewer would z-score everything to NaN and drop every column
        raise HeartjobsError(
            f"PRDC (radiomics): {len(kept[0])} of {len(sets[0])} real images have finite radiomic features; "
            "z-scoring needs at least 2 (the others are constant)"
        )
    # the same call, the same arguments as frechet_radiomics_distance: the same float32 values
    normalized = [
        frd.z_score_normalize(s, 0, 1, base_distribution=kept[0], replace_nan=False, handle_std_zero=False)
        for s in kept
    ]
    keep = np.isfinite(normalized[0]).all(axis=0) & np.isfinite(normalized[1]).all(axis=0)
    protocol = {
        "n_real_used": len(kept[0]),
        "n_generated_used": len(kept[1]),
        "features_used": int(keep.sum()),
        "normalisation": "z-score on the real set (FRD v1)",
    }
    return normalized[0][:, keep], normalized[1][:, keep], protocol


def prdc_radiomics(
    real: RadiomicFeatures | np.ndarray,
    generated: RadiomicFeatures | np.ndarray,
    k: int = DEFAULT_K,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> dict:
    """prdc in the radiomics space (radiomic_space's z-scored features), with that space's protocol (rows
    and features used) beside k and the counts."""
    real_z, generated_z, protocol = radiomic_space(real, generated)
    return prdc(real_z, generated_z, k, space="radiomics", chunk=chunk) | protocol
