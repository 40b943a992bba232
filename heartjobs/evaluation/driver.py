"""The one measuring driver: a generator against a prepared real set, by every metric its settings ask for
(heartjobs.evaluation.metrics), computed the thesis' way, reproducibly, repeated, and returned with its
protocol (nothing here writes a run folder; see records.py). Runs, checkpoints and `heartjobs evaluate`
all measure through `measure`.

Each repeat draws its own recorded seed and one stream of generated images, quantized to uint8 exactly as
a PNG of them would be; each feature space extracts its features from that stream once (Inception from
all n_generated images, radiomics from the first frd_n, the very images FID saw), and every metric of the
space computes its value from them. With save_images, every measured image is also written as PNG, so
the reference tools can recompute each number. With a RepeatLog, finished repeats are kept as they end
and a stopped measurement goes on from there.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from rich.text import Text

from heartjobs import __version__, atomic
from heartjobs.errors import HeartjobsError, JobInterrupted
from heartjobs.imaging import save_pngs, to_uint8
from heartjobs.progress import console
from heartjobs.spec.schema import EvalSection
from heartjobs.store.prepared import PreparedSet

from . import radiomics, verdicts
from .inception import FeatureExtractor, RealStatistics, real_count, real_statistics
from .metrics import METRICS, Options, in_space, singular_warnings, wanted
from .repeatlog import RepeatLog, entry_of, frd_of, has_frd
from .weights import resolve_weights


def generated_batches(
    generator: torch.nn.Module, latent_dim: int, n: int, seed: int, settings: EvalSection, device: torch.device
) -> Iterator[torch.Tensor]:
    """n images from the generator (eval mode), quantized as PNG files of them would be."""
    rng = torch.Generator(device=device).manual_seed(seed)
    with torch.inference_mode():
        for start in range(0, n, settings.batch_size):
            count = min(settings.batch_size, n - start)
            z = torch.randn(count, latent_dim, generator=rng, device=device)
            yield to_uint8(generator(z), settings.normalize)


def library_versions() -> dict:
    import importlib.metadata as md

    import scipy

    return {
        "heartjobs": __version__,
        "torch": torch.__version__,
        "pytorch_fid": md.version("pytorch-fid"),
        "scipy": scipy.__version__,
        "numpy": np.__version__,
    }


def check_sizes(settings: EvalSection, n_real: int) -> list[str]:
    """Refuse sets FID can't be computed on; warn about sets no larger than the feature dimension."""
    counts = {"n_generated": settings.n_generated, "n_real": n_real}
    for label, n in counts.items():
        if n < 2:
            raise HeartjobsError(f"eval.{label}: {n} images; FID needs at least 2")
    return singular_warnings("inception", counts, settings.dims)


def _measure_repeat(real: RealStatistics, features: np.ndarray, settings: EvalSection, repeat: int, seed: int) -> dict:
    """A repeat's entry: its number and seed, then the value of every Inception-space metric asked for."""
    entry = {"repeat": repeat, "seed": seed}
    for metric in in_space(wanted(settings), "inception"):
        values, _ = metric.compute(real, features, Options.of(settings, seed))
        entry |= values
    return entry


class _Keeper:
    """Passes generated batches through, keeping the first `keep` images (for FRD) and writing every one
    as PNG into `folder` when given."""

    def __init__(self, keep: int, folder: Path | None):
        self.keep, self.folder, self.kept, self.seen = keep, folder, [], 0

    def __call__(self, batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        for batch in batches:
            if self.seen < self.keep or self.folder is not None:
                pixels = batch.cpu().numpy()
                if self.seen < self.keep:
                    self.kept.append(pixels[: self.keep - self.seen])
                if self.folder is not None:
                    save_pngs(pixels, self.folder, first_index=self.seen)
            self.seen += len(batch)
            yield batch

    def images(self) -> np.ndarray:
        return np.concatenate(self.kept)


def measure(
    generator: torch.nn.Module,
    latent_dim: int,
    prepared: PreparedSet,
    settings: EvalSection,
    device: torch.device,
    *,
    poll: Callable[[], None] | None = None,
    save_images: Path | None = None,
    progress: RepeatLog | None = None,
) -> dict:
    """Every metric the settings ask for (FID; KID, FRD) of `generator` against `prepared`: each repeat's
    values, mean and std, and the protocol they were measured under (weights, n, dims, normalisation,
    versions, warnings). With save_images, the real images and each repeat's generated images go there as PNG (see
    write_image_readme for the layout). With progress, each finished repeat is kept there as it ends, and
    repeats found there are not measured again. poll() is called between batches and repeats (a heartbeat;
    a stop request raises there, and the repeat under way is measured again next time)."""
    started = time.perf_counter()
    n_real = real_count(prepared, settings)
    warnings = check_sizes(settings, n_real)
    metrics = wanted(settings)
    frd_wanted = bool(in_space(metrics, "radiomics"))
    if frd_wanted:
        radiomics.check_available(settings.frd_backend)  # before any image is generated
    weights = resolve_weights(settings.weights)
    if not weights.standard:
        warnings.append(
            f"{weights.kind} Inception weights ({weights.path.name}): FID values are not comparable to published ones"
        )
    frd_n = min(settings.frd_n, settings.n_generated)
    # with FRD's round-off columns dropped, another feature space than FRD v1's: named so wherever it shows
    # (the console line, the report), and no ladder verdict or published value carries over to it
    frd_version = radiomics.FRD_VERSION + ("+drop_degenerate" if settings.frd_drop_degenerate else "")
    for text in warnings:
        console.print(Text.assemble(("warning: ", "bold yellow"), text))
    extractor = FeatureExtractor(weights, settings.dims, device, settings.batch_size)
    real = real_statistics(prepared, extractor, weights, settings, poll)
    frd_backend = {"backend": settings.frd_backend, "device": device}
    real_frd = radiomics.real_features(prepared, n_real, poll=poll, **frd_backend) if frd_wanted else None
    if save_images is not None:
        save_pngs(prepared.images[:n_real], save_images / "real")
    repeats, frd_results, frd_error = [], [], None
    for r in range(settings.repeats):
        seed = settings.seed + r
        saved = progress.get(r) if progress is not None else None
        frd_error = frd_error or (saved or {}).get("_frd_error")
        frd_result = frd_of(saved) if saved is not None else None
        wants_frd = real_frd is not None and frd_error is None
        if saved is not None and (not wants_frd or has_frd(saved)) and save_images is None:
            console.print(f"repeat {r + 1}/{settings.repeats}: measured before this process, kept")
        else:  # this repeat's images are needed: for FID/KID, for its FRD, or to save them
            keeper = _Keeper(frd_n if wants_frd else 0, save_images / f"repeat_{r}" if save_images else None)
            batches = keeper(generated_batches(generator, latent_dim, settings.n_generated, seed, settings, device))
            if saved is None:
                label = f"repeat {r + 1}/{settings.repeats}"
                features = extractor.of_batches(batches, settings.n_generated, label, poll)
                saved = _measure_repeat(real, features, settings, r, seed)
                if progress is not None:
                    progress.put(r, saved)
            else:  # FID and KID were measured before a stop; the same seed draws the same images again
                for _ in batches:
                    pass
            if save_images is not None and settings.frd and frd_n < settings.n_generated:
                _link_first(save_images / f"repeat_{r}", save_images / f"repeat_{r}_frd", frd_n)
            if wants_frd and not has_frd(saved):
                try:
                    label = f"repeat {r + 1}/{settings.repeats} radiomic features"
                    generated = radiomics.extract(keeper.images(), label, poll=poll, **frd_backend)
                    options = Options.of(settings, seed)
                    values, frd_result = METRICS["frd"].compute(real_frd.features, generated, options)
                    saved = {**saved, **values}
                    if progress is not None:
                        progress.put(r, saved, frd=frd_result)
                except JobInterrupted:  # a stop request from poll(), not an FRD that can't be measured
                    raise
                except HeartjobsError as exc:  # e.g. every generated image constant: FRD is undefined, FID is not
                    frd_error = str(exc)
                    console.print(Text.assemble(("warning: ", "bold yellow"), f"{frd_error}; FID and KID kept"))
                    if progress is not None:
                        progress.put(r, saved, frd_error=frd_error)
        if real_frd is not None and frd_error is None:
            frd_results.append(frd_result)
        repeats.append(entry_of(saved))
        if poll:
            poll()
    # the Inception-space metrics' mean and population std (numpy's default) over the repeats
    spread = {}
    for metric in in_space(metrics, "inception"):
        values = np.array([metric.value(e) for e in repeats])
        spread[metric.name] = {f"{metric.name}_mean": float(values.mean()), f"{metric.name}_std": float(values.std())}
    result = {
        **spread["fid"],
        "repeats": repeats,
        "n_generated": settings.n_generated,
        "n_real": n_real,
        "dims": settings.dims,
        "normalize": settings.normalize,
        "batch_size": settings.batch_size,
        "weights": weights.describe(),
        "standard_weights": weights.standard,
        "real_statistics": {"file": str(real.path), "from_cache": real.cached},
        "device": str(device),
        "versions": library_versions(),
        "warnings": warnings,
    }
    for values in spread.values():
        result |= values  # fid's first, as before; the others after the protocol
    if real_frd is not None and frd_error is not None:
        result["frd"] = {
            "error": frd_error,
            "version": frd_version,
            "n_generated": frd_n,
            "n_real": n_real,
            "backend": settings.frd_backend,
        }
    elif real_frd is not None:
        used = frd_results[0].features_used
        # known only now: how many features frd-score's v1 keeps depends on the images
        for text in singular_warnings("radiomics", {"frd_n": frd_n, "n_real": n_real}, used):
            _warn(warnings, text)
        # FRD v1 leaves out images pyradiomics cannot process (constant ones: a collapsing generator's);
        # the value then rests on fewer images than asked for, which is said and recorded
        used_generated = min(r.n_generated for r in frd_results)
        used_real = frd_results[0].n_real
        for label, used, asked in (("generated", used_generated, frd_n), ("real", used_real, n_real)):
            if used < asked:
                _warn(
                    warnings,
                    f"FRD: {asked - used} of the {asked} {label} images have no radiomic features (constant "
                    f"images) and are left out, as FRD v1 does: FRD rests on {used}",
                )
        frds = np.array([e["frd"] for e in repeats])
        result["frd"] = {
            "mean": float(frds.mean()),
            "std": float(frds.std()),
            "version": frd_version,
            "n_generated": frd_n,
            "n_real": n_real,
            "features_used": frd_results[0].features_used,
            "n_generated_used": used_generated,  # fewest images of a repeat with features (NaN rows left out)
            "n_real_used": used_real,
            "features_extracted": len(real_frd.features.names),
            "backend": settings.frd_backend,
            "top_differences": radiomics.top_differences(frd_results),
            "real_features": {"file": str(real_frd.path), "from_cache": real_frd.cached},
            "versions": radiomics.versions(settings.frd_backend),
        }
        if settings.frd_drop_degenerate:  # another feature space than published FRD v1's
            result["frd"]["degenerate_dropped"] = frd_results[0].degenerate_dropped
            result["frd"]["comparable"] = "not comparable to published FRD v1: round-off columns dropped"
    # what the validity ladder found for each metric on this set and feature space (None: never laddered)
    space = {"weights_sha256": weights.sha256, "dims": settings.dims, "frd_version": frd_version}
    result["ladder"] = {m.name: verdicts.lookup(prepared.content_hash, m.name, **space) for m in metrics}
    if save_images is not None:
        result["saved_images"] = str(save_images.resolve())
        write_image_readme(save_images, result)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _warn(warnings: list[str], text: str) -> None:
    """A warning found once measuring is under way: said now and kept in the record's warnings."""
    console.print(Text.assemble(("warning: ", "bold yellow"), text))
    warnings.append(text)


def _link_first(source: Path, target: Path, n: int) -> None:
    """The first n PNGs of `source` in `target`: the set FRD measured, as hard links (copies where the
    file system has none)."""
    target.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{i:06d}.png"
        try:
            (target / name).hardlink_to(source / name)
        except OSError:
            shutil.copy2(source / name, target / name)


def write_image_readme(folder: Path, result: dict) -> None:
    """What the saved images are and the reference-tool commands (run in that folder) that recompute each
    number."""
    repeats = len(result["repeats"])
    lines = [
        "Images measured by heartjobs, exactly as measured (uint8 PNG). Run the commands below in this folder.",
        f"real/: the {result['n_real']} real images; repeat_R/: the {result['n_generated']} generated images of "
        f"repeat R (0..{repeats - 1}), seed in the record.",
        f"FID ({result['dims']}-d, {result['weights']['kind']} weights): "
        f"python -m pytorch_fid real repeat_0 --dims {result['dims']}"
        + ("" if result["standard_weights"] else "  (pytorch-fid's CLI uses the standard weights only)"),
    ]
    if "frd" in result and "mean" in result["frd"]:
        n = result["frd"]["n_generated"]
        subset = "repeat_0_frd" if n < result["n_generated"] else "repeat_0"
        lines.append(
            f"FRD ({result['frd']['version']}, the first {n} images of each repeat"
            + (", also in repeat_R_frd/" if subset != "repeat_0" else "")
            + f"): python -m frd_score real {subset}"
            + (
                "  (gives FRD v1; the recorded value left out the round-off columns: frd_drop_degenerate)"
                if result["frd"]["version"] != radiomics.FRD_VERSION
                else ""
            )
        )
    atomic.write_bytes(folder / "README.txt", ("\n".join(lines) + "\n").encode())
