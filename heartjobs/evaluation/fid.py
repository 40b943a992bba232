"""FID (and KID) of a run's generator against its prepared real set, the thesis' way, reproducibly.

Generated images are quantized to uint8 exactly as a PNG of them would be, then go through pytorch-fid's
InceptionV3 in batches with no files in between; the real set's statistics are computed once per
(content, weights, dims, normalisation) and cached as an .npz that pytorch-fid's CLI also reads. Each
repeat draws its own recorded seed. The report names the snapshot it measured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.text import Text

from heartjobs import __version__, artifacts, atomic
from heartjobs.artifacts import now_iso
from heartjobs.data.dataset import PreparedSet
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_json
from heartjobs.imaging import to_uint8
from heartjobs.progress import console, track
from heartjobs.spec import EvalSection, ResolvedSpec
from heartjobs.training.checkpoint import load_checkpoint, load_generator
from heartjobs.training.loop import resolve_device

from .statistics import frechet_distance, kernel_inception_distance, mean_and_covariance
from .weights import InceptionWeights, build_inception, cache_dir, resolve_weights

REPORT = "fid.json"
METRICS = "metrics.jsonl"


class FeatureExtractor:
    """uint8 images N x C x H x W -> Inception features N x dims (float64), batch by batch."""

    def __init__(self, weights: InceptionWeights, dims: int, device: torch.device, batch_size: int):
        # NHWC: Inception's convolutions run about 1.7x faster so on this project's CPU (bench_fid.py)
        self.model = build_inception(weights, dims, device).to(memory_format=torch.channels_last)
        self.device, self.batch_size = device, batch_size

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

    def of_batches(self, batches: Iterator[torch.Tensor], total: int, label: str) -> np.ndarray:
        parts = []
        with track(label, total) as advance:
            for batch in batches:
                parts.append(self(batch))
                advance(len(batch))
        return np.concatenate(parts)


@dataclass
class RealStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    path: Path
    cached: bool


def real_statistics(
    prepared: PreparedSet, extractor: FeatureExtractor, weights: InceptionWeights, settings: EvalSection
) -> RealStatistics:
    """The real set's features, mu and sigma, from the cache or computed once and cached atomically."""
    n_real = min(settings.n_real or prepared.count, prepared.count)
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
    if path.is_file():
        with np.load(path) as cached:
            return RealStatistics(cached["mu"], cached["sigma"], cached["features"], path, True)
    images = prepared.tensor()[:n_real]
    batches = (images[i : i + extractor.batch_size] for i in range(0, n_real, extractor.batch_size))
    features = extractor.of_batches(batches, n_real, f"real features ({n_real})")
    mu, sigma = mean_and_covariance(features)
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        # mu and sigma under pytorch-fid's names: `python -m pytorch_fid this.npz folder/` works.
        np.savez(f, mu=mu, sigma=sigma, features=features.astype(np.float32))
    return RealStatistics(mu, sigma, features.astype(np.float32).astype(np.float64), path, False)


@dataclass
class Snapshot:
    """A generator to measure and the file it came from."""

    generator: torch.nn.Module
    file: str
    epoch: int


def load_snapshot(run_dir: Path, spec: ResolvedSpec, checkpoint: Path | None, device: torch.device) -> Snapshot:
    if checkpoint is None:
        path = run_dir / "generator.pt"
        if not path.is_file():
            raise HeartjobsError(f"{path}: missing; the run has not finished (give --checkpoint FILE)")
        generator, meta = load_generator(path, device)
        return Snapshot(generator, "generator.pt", int(meta["epoch"]))
    from heartjobs.models import build_models

    state = load_checkpoint(Path(checkpoint), spec.spec_hash)
    if "G" not in state:
        raise HeartjobsError(f"{checkpoint}: not a training checkpoint (use it without --checkpoint)")
    t = spec.train
    generator, _ = build_models(spec.model, spec.data.size, spec.data.channels, t.latent_dim, t.batchnorm_eps)
    generator.load_state_dict(state["G"])
    try:
        name = str(Path(checkpoint).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        name = str(checkpoint)
    return Snapshot(generator.to(device).eval(), name, int(state["epoch"]))


def generated_batches(
    snapshot: Snapshot, latent_dim: int, n: int, seed: int, settings: EvalSection, device: torch.device
) -> Iterator[torch.Tensor]:
    """n images from the generator (eval mode), quantized as PNG files of them would be."""
    rng = torch.Generator(device=device).manual_seed(seed)
    with torch.inference_mode():
        for start in range(0, n, settings.batch_size):
            count = min(settings.batch_size, n - start)
            z = torch.randn(count, latent_dim, generator=rng, device=device)
            yield to_uint8(snapshot.generator(z), settings.normalize)


def read_resolved(run_dir: Path) -> ResolvedSpec:
    try:
        record = json.loads((run_dir / "resolved.json").read_text())
        return ResolvedSpec.model_validate(record["spec"])
    except (OSError, ValueError, KeyError) as exc:
        raise HeartjobsError(f"{run_dir / 'resolved.json'}: not a heartjobs run folder ({exc})") from None


def _library_versions() -> dict:
    import importlib.metadata as md

    import scipy

    return {
        "heartjobs": __version__,
        "torch": torch.__version__,
        "pytorch_fid": md.version("pytorch-fid"),
        "scipy": scipy.__version__,
        "numpy": np.__version__,
    }


def evaluate(
    run_dir: Path,
    settings: EvalSection | None = None,
    *,
    checkpoint: Path | None = None,
    device: str | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> dict:
    """Measure a run's generator (or one of its checkpoints); write the report and return it.

    The report goes to metrics.jsonl (one line per evaluation) and, for the final generator measured
    with the spec's own settings, to fid.json; other evaluations land in evals/.
    """
    run_dir = Path(run_dir)
    spec = read_resolved(run_dir)
    settings = settings or spec.eval
    started = time.perf_counter()
    torch_device = resolve_device(device or spec.train.device)
    prepared = PreparedSet.open(spec.data.prepared)
    if prepared.content_hash != spec.data.content_hash:
        raise HeartjobsError(
            f"{spec.data.prepared}: content_hash: the prepared set changed since {run_dir} was trained on it"
        )
    n_real = min(settings.n_real or prepared.count, prepared.count)
    for label, n in (("n_generated", settings.n_generated), ("n_real", n_real)):
        if n < 2:
            raise HeartjobsError(f"eval.{label}: {n} images; FID needs at least 2")
    warnings = [
        f"{label} = {n} < dims = {settings.dims}: the covariance is singular and FID is biased"
        for label, n in (("n_generated", settings.n_generated), ("n_real", n_real))
        if n < settings.dims
    ]
    weights = resolve_weights(settings.weights)
    if not weights.standard:
        warnings.append(
            f"{weights.kind} Inception weights ({weights.path.name}): FID values are not comparable to published ones"
        )
    for text in warnings:
        console.print(Text.assemble(("warning: ", "bold yellow"), text))

    snapshot = load_snapshot(run_dir, spec, checkpoint, torch_device)
    extractor = FeatureExtractor(weights, settings.dims, torch_device, settings.batch_size)
    real = real_statistics(prepared, extractor, weights, settings)
    repeats = []
    for r in range(settings.repeats):
        seed = settings.seed + r
        batches = generated_batches(snapshot, spec.train.latent_dim, settings.n_generated, seed, settings, torch_device)
        features = extractor.of_batches(batches, settings.n_generated, f"repeat {r + 1}/{settings.repeats}")
        mu, sigma = mean_and_covariance(features)
        entry = {"repeat": r, "seed": seed, "fid": frechet_distance(mu, sigma, real.mu, real.sigma)}
        if settings.kid:
            entry["kid"], entry["kid_subset_std"] = kernel_inception_distance(
                real.features,
                features,
                subsets=settings.kid_subsets,
                subset_size=settings.kid_subset_size,
                seed=seed,
            )
        repeats.append(entry)
        if heartbeat:
            heartbeat()

    fids = np.array([e["fid"] for e in repeats])
    report = {
        "metric": "fid",
        "run": str(run_dir),
        "job": spec.name,
        "spec_hash": spec.spec_hash,
        "snapshot": {"file": snapshot.file, "epoch": snapshot.epoch},
        "fid_mean": float(fids.mean()),
        "fid_std": float(fids.std()),  # population std (numpy's default) over the repeats
        "repeats": repeats,
        "n_generated": settings.n_generated,
        "n_real": n_real,
        "dims": settings.dims,
        "normalize": settings.normalize,
        "batch_size": settings.batch_size,
        "weights": weights.describe(),
        "standard_weights": weights.standard,
        "real_statistics": {"file": str(real.path), "from_cache": real.cached},
        "device": str(torch_device),
        "versions": _library_versions(),
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 3),
        "time": now_iso(),
    }
    if settings.kid:
        kids = np.array([e["kid"] for e in repeats])
        report |= {"kid_mean": float(kids.mean()), "kid_std": float(kids.std())}
    _write_report(run_dir, report, settings, spec, checkpoint is None)
    return report


def _write_report(run_dir: Path, report: dict, settings: EvalSection, spec: ResolvedSpec, final: bool) -> None:
    if final and settings == spec.eval:
        atomic.write_json(run_dir / REPORT, report)
        status = artifacts.read_status(run_dir)
        if status.get("state") == "failed" and status.get("phase") == "evaluating":
            # training had finished and only its FID failed (e.g. missing weights): now the run is done
            atomic.write_json(
                run_dir / artifacts.STATUS_FILE, {**status, "state": "done", "error": None, "ended": now_iso()}
            )
    else:
        tag = sha256_json(settings.model_dump(mode="json"))[:8]
        name = report["snapshot"]["file"].replace("/", "_").removesuffix(".pt")
        atomic.write_json(run_dir / "evals" / f"{name}_{tag}.json", report)
    with open(run_dir / METRICS, "a") as f:  # one line per evaluation, appended
        f.write(json.dumps(report) + "\n")
