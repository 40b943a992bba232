"""What pyradiomics' own pipeline hands each feature class, for the torch backend's agreement tests: an
8-bit slice goes through frd-score's v1 extractor's preprocessing (normalise, resample, pre-crop, mask
check, the Original and Wavelet image types, crop to the mask), and each feature class of pyradiomics is
run on the very image and mask it would get. Also test images: phantom slices and adversarial ones."""

from __future__ import annotations

import logging
from functools import cache

import numpy as np


@cache
def extractor():
    """frd-score's v1 2D extractor (the reference), quiet."""
    from frd_score import frd
    from radiomics import setVerbosity

    setVerbosity(60)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return frd.get_feature_extractor(frd_version="v1", image_dim=2)


def sitk_pair(image: np.ndarray, mask: np.ndarray | None = None):
    """An H x W image (any dtype) and its mask as frd-score builds them from a PNG: 1 x H x W float32 with
    spacing 1; the mask all ones less the corner voxel unless given."""
    import SimpleITK as sitk

    height, width = image.shape
    sitk_image = sitk.GetImageFromArray(image.astype(np.float32)[np.newaxis])
    sitk_image.SetSpacing((1.0, 1.0, 1.0))
    if mask is None:
        mask = np.ones((height, width), dtype=np.uint8)
        mask[0, 0] = 0
    sitk_mask = sitk.GetImageFromArray(mask.astype(np.uint8)[np.newaxis])
    sitk_mask.SetSpacing((1.0, 1.0, 1.0))
    return sitk_image, sitk_mask


def class_inputs(image: np.ndarray) -> dict:
    """{image type name ('original', 'wavelet-LH', ...): (sitk image, sitk mask, settings)}: exactly what
    pyradiomics' computeFeatures receives for each image type of the 8-bit H x W `image`."""
    from radiomics import imageoperations

    ex = extractor()
    settings = ex.settings.copy()
    image_node, mask_node = sitk_pair(image)
    image_node, mask_node = ex.loadImage(image_node, mask_node, None, **settings)
    box, corrected = imageoperations.checkMask(image_node, mask_node, **settings)
    if corrected is not None:
        mask_node = corrected
    out = {}
    for kind, custom in ex.enabledImagetypes.items():
        args = settings.copy()
        args.update(custom)
        for filtered, name, kwargs in getattr(imageoperations, f"get{kind}Image")(image_node, mask_node, **args):
            cropped, cropped_mask = imageoperations.cropToTumorMask(filtered, mask_node, box, padDistance=0)
            out[name] = (cropped, cropped_mask, kwargs)
    return out


def class_features(feature_class: str, sitk_image, sitk_mask, settings: dict) -> dict[str, float]:
    """pyradiomics' values of one feature class ('firstorder', 'glcm', ...) with the v1 extractor's enabled
    features, in pyradiomics' order."""
    from radiomics import getFeatureClasses

    names = extractor().enabledFeatures[feature_class]
    instance = getFeatureClasses()[feature_class](sitk_image, sitk_mask, **settings)
    for name in names or []:
        instance.enableFeatureByName(name)
    return {name: float(value) for name, value in instance.execute().items()}


def binned(sitk_image, sitk_mask, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """(grey levels, mask) as pyradiomics' texture classes see them: 2D H x W int64 levels 1..Ng inside the
    mask (0 outside) from imageoperations.binImage with binWidth 5, and the boolean mask."""
    import SimpleITK as sitk
    from radiomics import imageoperations

    array = sitk.GetArrayFromImage(sitk_image)[0].astype(np.float64)
    mask = sitk.GetArrayFromImage(sitk_mask)[0] == settings.get("label", 1)
    levels, _ = imageoperations.binImage(array, mask, **settings)
    return levels.astype(np.int64), mask


def phantom_slices(size: int, count: int = 4, seed: int = 0) -> np.ndarray:
    """`count` 8-bit phantom slices at `size` px (the heartjobs phantom, rendered in memory)."""
    from heartjobs.data.phantom import Phantom, PhantomParams

    phantom = Phantom(PhantomParams(slices=max(count, 2), size=size, seed=seed))
    out = []
    for index in range(count):
        raw, _ = phantom.render_slice(index)
        out.append(np.round(raw.astype(np.float64) / 65535 * 255).astype(np.uint8))
    return np.stack(out)


def adversarial_images(size: int) -> dict[str, np.ndarray]:
    """8-bit images that stress a feature implementation: constant, two-level, checkerboard, one bright
    pixel, maximal zones (stripes, a spiral), a grey range spanning many bins, random noise."""
    rng = np.random.default_rng(size)
    y, x = np.mgrid[:size, :size]
    spiral = np.zeros((size, size), np.uint8)
    # a one-pixel-wide square spiral: one zone that snakes through the whole image
    top, left, bottom, right, value = 0, 0, size - 1, size - 1, 200
    while top <= bottom and left <= right:
        spiral[top, left : right + 1] = value
        spiral[top : bottom + 1, right] = value
        if top + 2 <= bottom:
            spiral[bottom, left : right + 1] = value
        if left + 2 <= right:
            spiral[top + 2 : bottom + 1, left] = value
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom and left <= right:
            spiral[top - 1, left - 1] = value  # join to the next ring
    single = np.zeros((size, size), np.uint8)
    single[size // 3, size // 2] = 255
    return {
        "constant": np.full((size, size), 77, np.uint8),
        "two_level": np.where(x < size // 2, 40, 210).astype(np.uint8),
        "checkerboard": np.where((x + y) % 2 == 0, 0, 255).astype(np.uint8),
        "checker4": np.where((x // 4 + y // 4) % 2 == 0, 30, 220).astype(np.uint8),
        "single_bright_pixel": single,
        "stripes": np.where((y // 3) % 2 == 0, 10, 250).astype(np.uint8),
        "spiral": spiral,
        "ramp": ((x + y) * 255 // (2 * size - 2)).astype(np.uint8),
        "noise": rng.integers(0, 256, (size, size), dtype=np.uint8),
    }


def reference_on_levels(feature_class: str, levels: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    """pyradiomics' values of a feature class on these very grey levels: the class run with its binning
    replaced by the identity (levels outside the mask 0)."""
    import warnings
    from unittest import mock

    import radiomics.imageoperations

    image, sitk_mask = sitk_pair(levels, mask)

    def identity(matrix, coordinates=None, **_):
        return np.where(coordinates, matrix, 0).astype(int), None

    with mock.patch.object(radiomics.imageoperations, "binImage", identity), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. the nanmean of all-NaN angles
        return class_features(feature_class, image, sitk_mask, extractor().settings.copy())


def one_image(features, levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """A radiomics_torch class's `features` of one H x W image, as floats."""
    import torch

    got = features(torch.from_numpy(levels)[None], torch.from_numpy(mask)[None])
    return {name: float(value[0]) for name, value in got.items()}


def masked_levels(made: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hand-made (levels, mask or None for the whole image) cases as a class receives them: int64 levels,
    0 outside the mask, and the mask itself."""
    out = {}
    for name, (levels, mask) in made.items():
        mask = np.ones(levels.shape, bool) if mask is None else mask
        out[name] = (np.where(mask, levels, 0).astype(np.int64), mask)
    return out


def assert_agree(expected: dict[str, float], got: dict[str, float], label: str) -> None:
    """The same features in the same order, each within 1e-9 relative or 1e-12 absolute; NaN for NaN."""
    assert list(got) == list(expected), label
    for name, want in expected.items():
        have = got[name]
        if np.isnan(want):
            assert np.isnan(have), f"{label} {name}: {have} != NaN"
        else:
            assert abs(have - want) <= max(1e-12, 1e-9 * abs(want)), f"{label} {name}: {have} != {want}"


@cache
def pipeline_inputs(feature_class: str) -> dict[int, list[tuple[str, np.ndarray, np.ndarray, dict[str, float]]]]:
    """size -> [(label, levels, mask, pyradiomics' values)]: what FRD v1's pipeline hands a feature class
    for phantom slices (64 and 256 px) and the adversarial images (32 and 64 px; 'constant' fails
    pyradiomics' preprocessing), every image type."""
    images: dict[int, list] = {32: [], 64: [], 256: []}
    for size in (32, 64):
        images[size] += [(name, image) for name, image in adversarial_images(size).items() if name != "constant"]
    images[64] += [(f"phantom{index}", image) for index, image in enumerate(phantom_slices(64, 3))]
    images[256] += [(f"phantom{index}", image) for index, image in enumerate(phantom_slices(256, 2))]
    out: dict[int, list] = {}
    for size, named in images.items():
        out[size] = []
        for label, image in named:
            for kind, (sitk_image, sitk_mask, settings) in class_inputs(image).items():
                levels, mask = binned(sitk_image, sitk_mask, settings)
                expected = class_features(feature_class, sitk_image, sitk_mask, settings)
                out[size].append((f"{size}px {label} {kind}", levels, mask, expected))
    return out


def assert_pipeline_batch_agrees(features, names: tuple[str, ...], feature_class: str, size: int) -> None:
    """`features` (a radiomics_torch class's function) on all of pipeline_inputs' inputs of a size in one
    batch: float64, one value per image, each image's values agreeing with pyradiomics'."""
    import torch

    inputs = pipeline_inputs(feature_class)[size]
    levels = torch.from_numpy(np.stack([item[1] for item in inputs]))
    mask = torch.from_numpy(np.stack([item[2] for item in inputs]))
    got = features(levels, mask)
    assert list(got) == list(names)
    assert all(value.dtype == torch.float64 and value.shape == (len(inputs),) for value in got.values())
    for index, (label, *_, expected) in enumerate(inputs):
        assert_agree(expected, {name: float(value[index]) for name, value in got.items()}, label)


def assert_batch_equals_alone(features, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """`features` of the images in one batch equals their features one image at a time (1e-12)."""
    import pytest
    import torch

    got = features(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks)))
    for index, (levels, mask) in enumerate(zip(images, masks, strict=True)):
        alone = features(torch.from_numpy(levels)[None], torch.from_numpy(mask)[None])
        for name, value in alone.items():
            assert float(got[name][index]) == pytest.approx(float(value[0]), rel=1e-12, abs=1e-15, nan_ok=True), name
