"""The Inception feature space (FID's and KID's): uint8 images through pytorch-fid's InceptionV3 in batches,
with no files in between, and the real set's features, mean and covariance, computed once per (content,
weights, dims, normalisation, n) and cached as an .npz that pytorch-fid's CLI also reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from heartjobs import atomic
from heartjobs.hashing import sha256_json
from heartjobs.progress import track
from heartjobs.spec.schema import EvalSection
from heartjobs.store.prepared import PreparedSet

from .cache import cache_dir, load_arrays
from .statistics import mean_and_covariance
from .weights import InceptionWeights, build_inception


class BatchedFeatures:
    """A feature network called on uint8 batches (self(batch) -> N x dims float64), with progress."""

    dims: int

    def of_batches(
        self, batches: Iterator[torch.Tensor], total: int, label: str, poll: Callable[[], None] | None = None
    ) -> np.ndarray:
        """The features of every batch, in order; poll() after each (a stop request raises there)."""
        parts = []
        with track(label, total) as advance:
            for batch in batches:
                parts.append(self(batch))
                advance(len(batch))
                if poll:
                    poll()
        return np.concatenate(parts) if parts else np.zeros((0, self.dims))


class FeatureExtractor(BatchedFeatures):
    """uint8 images N x C x H x W -> Inception features N x dims (float64), batch by batch."""

    def __init__(self, weights: InceptionWeights, dims: int, device: torch.device, batch_size: int):
        # NHWC: Inception's convolutions run faster so on the CPU (bench/bench_fid.py measures it)
        self.model = build_inception(weights, dims, device).to(memory_format=torch.channels_last)
        self.device, self.batch_size, self.dims = device, batch_size, dims

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        # [0, 1] as ToTensor() gives it for a PNG; gray replicated to RGB as PIL's convert("RGB") does.
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        features = self.model(x.contiguous(memory_format=torch.channels_last))[0]
        if features.shape[2:] != (1, 1):  # blocks below 2048 dims: global average pool, as pytorch-fid does
            features = F.adaptive_avg_pool2d(features, (1, 1))
        return features.flatten(1).double().cpu().numpy()


@dataclass
class RealStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    path: Path
    cached: bool


def real_count(prepared: PreparedSet, settings: EvalSection) -> int:
    """How many real images the settings use: n_real, or the whole set."""
    return min(settings.n_real or prepared.count, prepared.count)


def real_statistics(
    prepared: PreparedSet,
    extractor: FeatureExtractor,
    weights: InceptionWeights,
    settings: EvalSection,
    poll: Callable[[], None] | None = None,
) -> RealStatistics:
    """The real set's features, mu and sigma, from the cache or computed once and cached atomically
    (poll() between batches, as in measure)."""
    n_real = real_count(prepared, settings)
    key = sha256_json(
        {
            "content_hash": prepared.content_hash,
            "weights_sha256": weights.sha256,
            "dims": settings.dims,
            "normalize": settings.normalize,
            "n_real": n_real,
        }
    )[:20]
    path = cache_dir() / "fid_stats" / f"real_{key}.npz"
    cached = load_arrays(path, ("mu", "sigma", "features"))
    if cached is not None:
        return RealStatistics(cached["mu"], cached["sigma"], cached["features"], path, True)
    images = prepared.tensor()[:n_real]
    batches = (images[i : i + extractor.batch_size] for i in range(0, n_real, extractor.batch_size))
    features = extractor.of_batches(batches, n_real, f"real features ({n_real})", poll)
    mu, sigma = mean_and_covariance(features)
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        # mu and sigma under pytorch-fid's names: `python -m pytorch_fid this.npz folder/` works.
        np.savez(f, mu=mu, sigma=sigma, features=features.astype(np.float32))
    return RealStatistics(mu, sigma, features.astype(np.float32).astype(np.float64), path, False)
