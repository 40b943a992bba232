"""The torch backend of FRD's features against pyradiomics itself: the preprocessing bit for bit, the
binning level for level, the firstorder class and the whole 398-column vector within 1e-9 relative (or
1e-12 absolute), batched equal to one at a time, and FRD equal to frd-score's own CLI at 450 vs 450. The
feature classes glcm, glrlm, glszm and ngtdm have their own files (test_radiomics_torch_<class>.py)."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from heartjobs import atomic
from heartjobs.evaluation import radiomics
from heartjobs.evaluation.radiomics_torch import binning, extraction, firstorder, preprocessing

from .radiomics_cases import adversarial_images, binned, class_features, class_inputs, phantom_slices

RELATIVE, ABSOLUTE = 1e-9, 1e-12


def assert_close(ours: float, reference: float, where: str, absolute: float = ABSOLUTE) -> None:
    """Within 1e-9 relative or `absolute` (1e-12); NaN where pyradiomics gives NaN."""
    if np.isnan(reference):
        assert np.isnan(ours), f"{where}: {ours} where pyradiomics gives NaN"
        return
    difference = abs(ours - reference)
    assert difference <= absolute or difference <= RELATIVE * abs(reference), f"{where}: {ours} vs {reference}"


def absolute_tolerance(names: list[str], row: np.ndarray, column: int) -> float:
    """1e-12, except for GLCM's ClusterShade, a sum of cubes whose true value is 0 on symmetric images,
    where pyradiomics' own round-off leaves up to ~1e-11: 1e-12 of the size of its terms there,
    sqrt(ClusterProminence x ClusterTendency) of the same image type (test_radiomics_torch_glcm.py)."""
    name = names[column]
    if not name.endswith("glcm_ClusterShade"):
        return ABSOLUTE
    prefix = name.removesuffix("ClusterShade")
    terms = row[names.index(prefix + "ClusterProminence")] * row[names.index(prefix + "ClusterTendency")]
    return max(ABSOLUTE, 1e-12 * float(np.sqrt(abs(terms))))


@cache
def _images(size: int) -> dict[str, np.ndarray]:
    slices = {f"phantom_{i}": image for i, image in enumerate(phantom_slices(size, 3))}
    return slices | adversarial_images(size)


@pytest.mark.parametrize("size", [256, 64, 33, 50])
def test_preprocessing_gives_every_feature_class_the_very_image_pyradiomics_gives_it(size):
    """Normalise, B-spline resample, crop and wavelet bit for bit; the diagnostics and the firstorder Mean
    (the round-off columns of the wavelet detail bands) equal to the last bit."""
    for name, image in _images(size).items():
        prepared = preprocessing.prepare(image)
        if name == "constant":  # pyradiomics fails on it (a zero spread): so does this, as a missing image
            assert prepared.images is None
            assert radiomics._chunk_features(image[None])[1] == [None]
            continue
        reference = class_inputs(image)
        for k, image_type in enumerate(preprocessing.IMAGE_TYPES):
            sitk_image, sitk_mask, _ = reference[image_type]
            np.testing.assert_array_equal(prepared.images[k], sitk.GetArrayFromImage(sitk_image)[0])
            np.testing.assert_array_equal(prepared.mask, sitk.GetArrayFromImage(sitk_mask)[0] == 1)
        names, values = radiomics._image_features(image)
        by_name = dict(zip(names, values, strict=True))
        assert list(prepared.diagnostics) == [by_name[n] for n in preprocessing.DIAGNOSTICS], name
        prefixes = ["" if t == "original" else f"{t}_" for t in preprocessing.IMAGE_TYPES]
        assert list(prepared.means) == [by_name[f"{p}firstorder_Mean"] for p in prefixes], name


def test_binning_equals_pyradiomics_on_values_on_and_near_the_bin_edges():
    from radiomics import imageoperations

    rng = np.random.default_rng(0)
    for trial in range(60):
        values = rng.normal(0, 50, (4, 9, 11))
        if trial % 3 == 0:
            values = np.round(values) * 5.0  # exactly on edges
        elif trial % 3 == 1:
            values = np.round(values / 5) * 5 + rng.choice([-1e-13, 0.0, 1e-13], values.shape)
        mask = rng.random(values.shape) > 0.2
        ours = binning.discretize(torch.from_numpy(values), torch.from_numpy(mask)).numpy()
        for b in range(4):
            reference, _ = imageoperations.binImage(values[b].copy(), mask[b], binWidth=5)
            np.testing.assert_array_equal(ours[b], reference)
    flat = torch.full((1, 3, 3), 10.0, dtype=torch.float64)  # a flat region: one bin
    assert binning.discretize(flat, torch.ones_like(flat, dtype=torch.bool)).unique().tolist() == [1]


@pytest.mark.parametrize("size", [256, 64])
def test_firstorder_equals_pyradiomics_in_a_batch_of_different_images(size):
    images = {k: v for k, v in _images(size).items() if k != "constant"}
    prepared = [preprocessing.prepare(image) for image in images.values()]
    mask = torch.from_numpy(np.stack([p.mask for p in prepared]))
    for t, image_type in enumerate(preprocessing.IMAGE_TYPES):
        values = torch.from_numpy(np.stack([p.images[t] for p in prepared]))
        levels = binning.discretize(values, mask)
        means = torch.tensor([p.means[t] for p in prepared])
        ours = firstorder.features(values, levels, mask, means, extraction.VOXEL_VOLUME)
        for i, name in enumerate(images):
            sitk_image, sitk_mask, settings = class_inputs(images[name])[image_type]
            reference = class_features("firstorder", sitk_image, sitk_mask, settings)
            assert list(ours) == list(reference)
            for feature, value in reference.items():
                assert_close(float(ours[feature][i]), value, f"{size} px {name} {image_type} {feature}")
            np.testing.assert_array_equal(levels[i].numpy(), binned(sitk_image, sitk_mask, settings)[0])


@pytest.mark.parametrize("size", [64, 256])
def test_the_whole_feature_vector_equals_pyradiomics_column_by_column(size):
    """398 columns, named and ordered as frd-score's run of pyradiomics gives them; a constant slice is a
    NaN row in both."""
    images = np.stack(list(_images(size).values()))
    ours = radiomics.extract(images, "torch", workers=1, backend="torch")
    reference = radiomics.extract(images, "pyradiomics", workers=1, backend="pyradiomics")
    assert ours.names == reference.names and len(ours.names) == 398
    assert ours.names == list(extraction.feature_names())
    for i, name in enumerate(_images(size)):
        if name == "constant":
            assert np.isnan(ours.values[i]).all() and np.isnan(reference.values[i]).all()
            continue
        assert_rows_close(ours.values[i : i + 1], reference.values[i : i + 1], f"{size} px {name}")


def test_a_batch_equals_its_images_one_at_a_time():
    images = np.stack([v for k, v in _images(64).items() if k != "constant"])
    prepared = [preprocessing.prepare(image) for image in images]
    together = extraction.features_of(prepared, torch.device("cpu"))
    alone = np.concatenate([extraction.features_of([p], torch.device("cpu")) for p in prepared])
    assert_rows_close(together, alone, "batched")
    # the extraction's batches and worker processes change nothing either
    assert_rows_close(radiomics.extract(images, "two workers", workers=2).values, alone, "two workers")


def assert_rows_close(ours: np.ndarray, reference: np.ndarray, label: str) -> None:
    names = list(extraction.feature_names())
    assert ours.shape == reference.shape == (len(reference), len(names))
    for i, row in enumerate(reference):
        for column, feature in enumerate(names):
            tolerance = absolute_tolerance(names, row, column)
            assert_close(ours[i, column], row[column], f"{label}: image {i} {feature}", tolerance)


def test_frd_equals_frd_scores_cli_at_450_against_450(tmp_path):
    """The torch backend's FRD against `python -m frd_score` (pyradiomics) on the same PNGs: within 1e-6
    relative at n = 450 per set, as the issue asks."""
    from heartjobs.imaging import save_pngs

    from .test_frd import _cli_frd

    real = phantom_slices(64, 450, seed=1)
    generated = np.clip(phantom_slices(64, 450, seed=2).astype(int) + 6, 0, 255).astype(np.uint8)
    save_pngs(real[:, None], tmp_path / "real")
    save_pngs(generated[:, None], tmp_path / "generated")
    ours = radiomics.frechet_radiomics_distance(
        radiomics.extract(real, "real"), radiomics.extract(generated, "generated")
    )
    reference = _cli_frd(tmp_path / "real", tmp_path / "generated", "--num_workers", "2")
    assert ours.frd == pytest.approx(reference, rel=1e-6)


def test_identical_sets_are_unmeasurable_with_the_reason_never_minus_infinity():
    images = phantom_slices(64, 6)
    features = radiomics.extract(images, "real", workers=1)
    with pytest.raises(radiomics.FrdUnmeasurable) as caught:
        radiomics.frechet_radiomics_distance(features, features)
    text = str(caught.value)
    assert "same features" in text and "n_real=6, n_generated=6 against" in text and "covariance ranks" in text


def test_drop_degenerate_leaves_out_exactly_the_round_off_columns():
    """On phantom slices the rule finds the three wavelet detail Means (round-off zeros) and nothing else;
    FRD without them differs from FRD v1's value."""
    real = radiomics.extract(phantom_slices(64, 24, seed=3), "real", workers=1)
    generated = radiomics.extract(phantom_slices(64, 24, seed=4), "generated", workers=1)
    dropped = [n for n, d in zip(real.names, radiomics.degenerate_columns(real.values), strict=True) if d]
    assert dropped == [f"wavelet-{band}_firstorder_Mean" for band in ("LH", "HL", "HH")]
    assert np.abs(real.values[:, [real.names.index(n) for n in dropped]]).max() < 1e-12
    kept = radiomics.frechet_radiomics_distance(real, generated)
    without = radiomics.frechet_radiomics_distance(real, generated, drop_degenerate=True)
    assert without.degenerate_dropped == 3 and kept.degenerate_dropped == 0
    assert without.features_used == kept.features_used - 3 and without.frd != kept.frd


def test_every_json_heartjobs_writes_is_strict(tmp_path):
    """Non-finite floats become null; a strict parser reads the file."""

    def strict(text: str):
        def refuse(constant: str):
            raise AssertionError(f"not strict JSON: {constant}")

        return json.loads(text, parse_constant=refuse)

    atomic.write_json(tmp_path / "x.json", {"loss": float("nan"), "frd": [float("-inf"), 1.5], "n": 3})
    assert strict((tmp_path / "x.json").read_text()) == {"loss": None, "frd": [None, 1.5], "n": 3}
