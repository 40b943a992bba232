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
from .inception import FeatureExtractor, real_count, real_statistics
from .memorisation import plot_pairs
from .metrics import METRICS, PRDC_KEYS, SPACES, Metric, Options, check_prdc_k, in_space, singular_warnings, wanted
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
    check_prdc_k(settings, n_real)
    return singular_warnings("inception", counts, settings.dims)


def feature_network(settings: EvalSection, device: torch.device):
    """The feature network of FID, KID, PRDC and feature-space memorisation, and its checked weights:
    pytorch-fid's InceptionV3, or RadImageNet's ResNet-50 from the file [eval] weights names."""
    if settings.features == "radimagenet":
        from . import radimagenet

        weights = radimagenet.resolve_weights(settings.weights)
        return radimagenet.FeatureExtractor(weights, device, settings.batch_size), weights
    weights = resolve_weights(settings.weights)
    return FeatureExtractor(weights, settings.dims, device, settings.batch_size), weights


class _Keeper:
    """Passes generated batches through, keeping the first `keep` images (for FRD, MS-SSIM and
    memorisation) and writing every one as PNG into `folder` when given."""

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


class _Repeat:
    """One repeat's entry as it fills, space by space, each metric computed once (a stopped measurement
    goes on with what its repeat log kept): values under the metrics' keys; _errors, a metric's reason for
    having no value; _details, what a metric says beyond its numbers (JSON)."""

    def __init__(self, saved: dict | None, repeat: int, seed: int):
        self.saved = dict(saved) if saved else {"repeat": repeat, "seed": seed}
        self.saved.setdefault("_errors", {})
        self.saved.setdefault("_details", {})
        if "_frd_error" in self.saved:  # a log written before errors were kept per metric
            self.saved["_errors"].setdefault("frd", self.saved["_frd_error"])

    def settled(self, metric: Metric) -> bool:
        if metric.name == "frd":
            return has_frd(self.saved) or "frd" in self.saved["_errors"]
        return all(key in self.saved for key in metric.keys) or metric.name in self.saved["_errors"]

    def open(self, metrics: list[Metric]) -> list[Metric]:
        return [metric for metric in metrics if not self.settled(metric)]


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
    figures: Path | None = None,
) -> dict:
    """Every metric the settings ask for (FID; KID, FRD, PRDC in both spaces, MS-SSIM diversity,
    memorisation in three spaces) of `generator` against `prepared`: each repeat's values, mean and std,
    and the protocol they were measured under (the feature network and its weights, n, dims,
    normalisation, versions, warnings). With save_images, the real images and each repeat's generated
    images go there as PNG (see write_image_readme for the layout). With figures, the closest pairs of
    the first repeat's pixel-space memorisation are drawn there (memorisation_pairs.png). With progress,
    each finished repeat is kept there as it ends, and what was measured there is not measured again.
    poll() is called between batches and repeats (a heartbeat; a stop request raises there, and the part
    of a repeat under way is measured again next time)."""
    started = time.perf_counter()
    n_real = real_count(prepared, settings)
    warnings = check_sizes(settings, n_real)
    metrics = wanted(settings)
    by_space = {space: in_space(metrics, space) for space in SPACES}
    if by_space["radiomics"]:
        radiomics.check_available(settings.frd_backend)  # before any image is generated
    extractor, weights = feature_network(settings, device)
    if settings.features == "radimagenet":
        warnings.append(
            f"RadImageNet ResNet-50 features ({weights.path.name}, sha256 {weights.sha256[:12]}): FID, KID and "
            "PRDC in this space are not comparable to published (Inception) values"
        )
    elif not weights.standard:
        warnings.append(
            f"{weights.kind} Inception weights ({weights.path.name}): FID values are not comparable to published ones"
        )
    frd_n = min(settings.frd_n, settings.n_generated)
    # with FRD's round-off columns dropped, another feature space than FRD v1's: named so wherever it shows
    # (the console line, the report), and no ladder verdict or published value carries over to it
    frd_version = radiomics.FRD_VERSION + ("+drop_degenerate" if settings.frd_drop_degenerate else "")
    for text in warnings:
        console.print(Text.assemble(("warning: ", "bold yellow"), text))
    real = real_statistics(prepared, extractor, weights, settings, poll)
    frd_backend = {"backend": settings.frd_backend, "device": device}
    real_frd = radiomics.real_features(prepared, n_real, poll=poll, **frd_backend) if by_space["radiomics"] else None
    real_pixels = np.asarray(prepared.images[:n_real]) if by_space["pixels"] else None
    if save_images is not None:
        save_pngs(prepared.images[:n_real], save_images / "real")
    keep = frd_n if by_space["radiomics"] or by_space["pixels"] else 0
    repeats, frd_results, details, frd_error = [], [], [], None
    for r in range(settings.repeats):
        seed = settings.seed + r
        repeat = _Repeat(progress.get(r) if progress is not None else None, r, seed)
        if frd_error is not None:  # FRD unmeasurable in an earlier repeat: not extracted again
            repeat.saved["_errors"].setdefault("frd", frd_error)
        frd_result = frd_of(repeat.saved)
        todo = {space: repeat.open(chosen) for space, chosen in by_space.items()}
        label = f"repeat {r + 1}/{settings.repeats}"
        if not any(todo.values()) and save_images is None:
            console.print(f"{label}: measured before this process, kept")
        else:  # this repeat's images are needed: for a metric not yet measured, or to save them
            options = Options.of(settings, seed, device)
            keeper = _Keeper(keep if todo["radiomics"] or todo["pixels"] else 0, _folder(save_images, r))
            batches = keeper(generated_batches(generator, latent_dim, settings.n_generated, seed, settings, device))
            if todo["inception"]:
                features = extractor.of_batches(batches, settings.n_generated, label, poll)
                _compute(repeat, todo["inception"], real, features, options, warnings)
                _keep(progress, r, repeat)
            else:  # measured before a stop; the same seed draws the same images again
                for _ in batches:
                    pass
            if save_images is not None and settings.frd and frd_n < settings.n_generated:
                _link_first(save_images / f"repeat_{r}", save_images / f"repeat_{r}_frd", frd_n)
            if todo["radiomics"]:
                generated = radiomics.extract(keeper.images(), f"{label} radiomic features", poll=poll, **frd_backend)
                found = _compute(repeat, todo["radiomics"], real_frd.features, generated, options, warnings)
                frd_result = found.get("frd", frd_result)
                _keep(progress, r, repeat, frd_result)
            if todo["pixels"]:
                pixels = _grey(keeper.images())
                _compute(repeat, todo["pixels"], real_pixels, pixels, options, warnings)
                _keep(progress, r, repeat, frd_result)
                if r == 0 and figures is not None and "memorisation_pixels" in repeat.saved["_details"]:
                    plot_pairs(
                        repeat.saved["_details"]["memorisation_pixels"],
                        pixels,
                        real_pixels,
                        figures / MEMORISATION_FIGURE,
                    )
        frd_error = repeat.saved["_errors"].get("frd", frd_error)
        if frd_result is not None and frd_error is None:
            frd_results.append(frd_result)
        repeats.append(entry_of(repeat.saved))
        details.append(repeat.saved)
        if poll:
            poll()
    # FID's and KID's mean and population std (numpy's default) over the repeats
    spread = {}
    for metric in metrics:
        if metric.name in ("fid", "kid"):
            values = np.array([metric.value(e) for e in repeats])
            spread |= {f"{metric.name}_mean": float(values.mean()), f"{metric.name}_std": float(values.std())}
    result = {
        "fid_mean": spread["fid_mean"],
        "fid_std": spread["fid_std"],
        "repeats": repeats,
        "n_generated": settings.n_generated,
        "n_real": n_real,
        "dims": extractor.dims,  # the spec's for Inception, 2048 for RadImageNet's ResNet-50
        "normalize": settings.normalize,
        "batch_size": settings.batch_size,
        "features": settings.features,
        "weights": weights.describe(),
        "standard_weights": weights.standard,
        "real_statistics": {"file": str(real.path), "from_cache": real.cached},
        "device": str(device),
        "versions": library_versions(),
        "warnings": warnings,
    }
    result |= {key: value for key, value in spread.items() if not key.startswith("fid")}
    if real_frd is not None and by_space["radiomics"] and METRICS["frd"] in metrics:
        result["frd"] = _frd_block(settings, frd_results, frd_error, frd_version, frd_n, n_real, real_frd, warnings)
    result |= _beyond_fid(metrics, details, settings, frd_n, n_real)
    # what the validity ladder found for each number on this set and feature space (None: never laddered)
    space = {"weights_sha256": weights.sha256, "dims": result["dims"], "frd_version": frd_version}
    result["ladder"] = {
        number.key: verdicts.lookup(prepared.content_hash, number.key, **space)
        for metric in metrics
        for number in metric.numbers
    }
    if save_images is not None:
        result["saved_images"] = str(save_images.resolve())
        write_image_readme(save_images, result)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


MEMORISATION_FIGURE = "memorisation_pairs.png"


def _folder(save_images: Path | None, repeat: int) -> Path | None:
    return save_images / f"repeat_{repeat}" if save_images is not None else None


def _grey(images: np.ndarray) -> np.ndarray:
    """N x 1 x H x W -> N x H x W, as the prepared set holds its images."""
    return images[:, 0] if images.ndim == 4 and images.shape[1] == 1 else images


def _compute(repeat: _Repeat, metrics: list[Metric], real, generated, options: Options, warnings: list[str]) -> dict:
    """Each metric's values into the repeat's entry (its detail kept beside them); a metric that cannot be
    measured on these images (FRD of constant images) is said once and recorded with its reason, the others
    still measured. Returns the details of the metrics measured now."""
    found = {}
    for metric in metrics:
        try:
            values, detail = metric.compute(real, generated, options)
        except JobInterrupted:  # a stop request, not a metric that can't be measured
            raise
        except HeartjobsError as exc:
            why = str(exc)
            repeat.saved["_errors"][metric.name] = why
            if why not in warnings:
                kept = "FID and KID kept" if metric.name == "frd" else "the other metrics kept"
                _warn(warnings, f"{why}; {kept}")
            continue
        repeat.saved |= values
        found[metric.name] = detail
        if metric.name != "frd":  # FRD's detail (an FrdResult) is kept by the repeat log itself
            repeat.saved["_details"][metric.name] = detail
    return found


def _keep(progress: RepeatLog | None, r: int, repeat: _Repeat, frd: radiomics.FrdResult | None = None) -> None:
    if progress is not None:
        progress.put(r, repeat.saved, frd=frd)


def _mean_std(values: list[float]) -> dict:
    array = np.array(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std())}


def _beyond_fid(metrics: list[Metric], details: list[dict], settings: EvalSection, frd_n: int, n_real: int) -> dict:
    """The record's blocks for PRDC (both spaces), MS-SSIM diversity and memorisation: each number's mean
    and std over the repeats that have it, with the protocol it was measured under."""
    blocks: dict[str, dict] = {}
    names = {m.name for m in metrics}
    for name, suffix, space in (("prdc", "", "inception"), ("prdc_radiomics", "_radiomics", "radiomics")):
        if name not in names:
            continue
        measured = [d for d in details if f"precision{suffix}" in d]
        if not measured:
            blocks[name] = {"error": _first_error(details, name)}
            continue
        protocol = measured[0]["_details"].get(name, {})
        block = {"k": settings.prdc_k, "space": space}
        if space == "inception":  # the feature network's space: which network
            block["network"] = settings.features
        block |= {key: value for key, value in protocol.items() if key not in ("k", "space")}
        for key in PRDC_KEYS:
            block[key] = _mean_std([d[f"{key}{suffix}"] for d in measured])
        blocks[name] = block
    if "ms_ssim" in names:
        measured = [d for d in details if "ms_ssim_ratio" in d]
        if measured:
            blocks["ms_ssim"] = {
                "ratio": _mean_std([d["ms_ssim_ratio"] for d in measured]),
                "generated": _mean_std([d["ms_ssim_generated"] for d in measured]),
                "real": _mean_std([d["ms_ssim_real"] for d in measured]),
                "pairs": settings.ms_ssim_pairs,
                "n_generated": frd_n,
                "n_real": n_real,
                "protocol": measured[0]["_details"].get("ms_ssim", {}),
            }
        else:
            blocks["ms_ssim"] = {"error": _first_error(details, "ms_ssim")}
    spaces = {}
    for space in SPACES:
        name = f"memorisation_{space}"
        if name not in names:
            continue
        measured = [d for d in details if f"memorised_{space}" in d]
        if not measured:
            spaces[space] = {"error": _first_error(details, name)}
            continue
        first = measured[0]["_details"].get(name, {})
        spaces[space] = {
            "fraction": _mean_std([d[f"memorised_{space}"] for d in measured]),
            "memorised": any(d[f"memorised_{space}_flag"] for d in measured),
            "threshold": first.get("threshold"),
            "baseline": first.get("protocol", {}).get("baseline"),
            "n_generated": first.get("n_generated"),
            "n_training": first.get("n_training"),
            "dims": first.get("dims"),
            "rule": first.get("protocol", {}).get("rule"),
            "exact_copies": first.get("generated_exact_copies"),
            "pairs": first.get("pairs", []),
        }
    if spaces:
        blocks["memorisation"] = {
            "memorised": any(s.get("memorised", False) for s in spaces.values()),
            "quantile": settings.memorisation_quantile,
            "spaces": spaces,
        }
    return blocks


def _first_error(details: list[dict], name: str) -> str:
    return next((d["_errors"][name] for d in details if name in d["_errors"]), "not measured")


def _frd_block(
    settings: EvalSection,
    frd_results: list,
    frd_error: str | None,
    frd_version: str,
    frd_n: int,
    n_real: int,
    real_frd,
    warnings: list[str],
) -> dict:
    """The record's FRD: its mean and std over the repeats with the protocol, or why it is unmeasurable."""
    if frd_error is not None or not frd_results:
        return {
            "error": frd_error or "not measured",
            "version": frd_version,
            "n_generated": frd_n,
            "n_real": n_real,
            "backend": settings.frd_backend,
        }
    used = frd_results[0].features_used
    # known only now: how many features frd-score's v1 keeps depends on the images
    for text in singular_warnings("radiomics", {"frd_n": frd_n, "n_real": n_real}, used):
        _warn(warnings, text)
    # FRD v1 leaves out images pyradiomics cannot process (constant ones: a collapsing generator's); the
    # value then rests on fewer images than asked for, which is said and recorded
    used_generated = min(r.n_generated for r in frd_results)
    used_real = frd_results[0].n_real
    for label, count, asked in (("generated", used_generated, frd_n), ("real", used_real, n_real)):
        if count < asked:
            _warn(
                warnings,
                f"FRD: {asked - count} of the {asked} {label} images have no radiomic features (constant "
                f"images) and are left out, as FRD v1 does: FRD rests on {count}",
            )
    frds = np.array([r.frd for r in frd_results])
    block = {
        "mean": float(frds.mean()),
        "std": float(frds.std()),
        "version": frd_version,
        "n_generated": frd_n,
        "n_real": n_real,
        "features_used": used,
        "n_generated_used": used_generated,  # fewest images of a repeat with features (NaN rows left out)
        "n_real_used": used_real,
        "features_extracted": len(real_frd.features.names),
        "backend": settings.frd_backend,
        "top_differences": radiomics.top_differences(frd_results),
        "real_features": {"file": str(real_frd.path), "from_cache": real_frd.cached},
        "versions": radiomics.versions(settings.frd_backend),
    }
    if settings.frd_drop_degenerate:  # another feature space than published FRD v1's
        block["degenerate_dropped"] = frd_results[0].degenerate_dropped
        block["comparable"] = "not comparable to published FRD v1: round-off columns dropped"
    return block


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
        (
            f"FID ({result['dims']}-d, {result['weights']['kind']} weights): "
            f"python -m pytorch_fid real repeat_0 --dims {result['dims']}"
            + ("" if result["standard_weights"] else "  (pytorch-fid's CLI uses the standard weights only)")
        )
        if result.get("features", "inception") == "inception"
        else "FID, KID, PRDC: in RadImageNet ResNet-50's space, which no reference tool computes (pytorch-fid's CLI "
        "uses Inception)",
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
