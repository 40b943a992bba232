"""The images each pyradiomics feature class sees under frd-score's v1 extractor, made for one 8-bit slice
with the same operations, bit for bit: SimpleITK's Normalize x 100, its B-spline resampling to 2 mm (the
grid pyradiomics' resampleImage computes, pre-cropped to the mask's box padded by 10), the crop to the
mask, and the coif1 stationary wavelet of PyWavelets along the two in-plane axes (pyradiomics' _swt3).

Also what pyradiomics computes here with numpy and what heartjobs keeps from it exactly: the 13 numeric
diagnostics and the firstorder Mean of every image type. The Mean of the three wavelet detail bands is a
round-off zero (|x| < 1e-15) that FRD's z-scoring against the real set inflates to O(1), so it must come
from the same floating-point operations as pyradiomics (numpy's pairwise sum over the same array), not
from a torch reduction summing in another order.

Runs on the CPU, one image at a time (SimpleITK and PyWavelets), in the extraction's worker processes.
The geometry (grid, mask, crop) depends only on the image size, so it is worked out once per size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

# frd-score 1.0.1's configs/extraction_2d.yaml, the settings this module reproduces
NORMALIZE_SCALE = 100
RESAMPLED_SPACING = (2.0, 2.0, 0.0)  # x, y, z in mm; 0 keeps the original spacing
PAD_DISTANCE = 10
WAVELET = "coif1"
LABEL = 1
IMAGE_TYPES = ("original", "wavelet-LH", "wavelet-HL", "wavelet-HH", "wavelet-LL")
DIAGNOSTICS = (
    "diagnostics_Image-original_Mean",
    "diagnostics_Image-original_Minimum",
    "diagnostics_Image-original_Maximum",
    "diagnostics_Mask-original_VoxelNum",
    "diagnostics_Mask-original_VolumeNum",
    "diagnostics_Image-interpolated_Mean",
    "diagnostics_Image-interpolated_Minimum",
    "diagnostics_Image-interpolated_Maximum",
    "diagnostics_Mask-interpolated_VoxelNum",
    "diagnostics_Mask-interpolated_VolumeNum",
    "diagnostics_Mask-interpolated_Mean",
    "diagnostics_Mask-interpolated_Minimum",
    "diagnostics_Mask-interpolated_Maximum",
)


@dataclass(frozen=True)
class Geometry:
    """Where a slice of one size goes: the resampling grid and the crop to the mask (all from the mask,
    which is the same for every slice of that size: the whole image less its first voxel)."""

    size: tuple[int, int]  # H, W of the 8-bit slice
    new_size: list[int]  # x, y, z of the resampled grid
    new_origin: tuple[float, ...]
    spacing: tuple[float, ...]
    mask: np.ndarray  # 1 x h x w bool, the resampled mask
    crop: tuple[slice, slice, slice]  # z, y, x: the crop to the mask's bounding box
    mask_diagnostics: tuple[float, float, float, float]  # original voxels, volumes; interpolated voxels, volumes


@dataclass
class Prepared:
    """One slice, ready for the feature classes: the five image types, each cropped (h x w float64), the
    mask (h x w bool), the 13 diagnostics and the exact firstorder Mean of each type. `images` is None when
    pyradiomics cannot process the slice (a constant one: its normalisation divides by a zero spread)."""

    images: np.ndarray | None  # 5 x h x w float64
    mask: np.ndarray  # h x w bool
    diagnostics: np.ndarray  # 13 float64
    means: np.ndarray  # 5 float64


def _sitk_pair(height: int, width: int, image: np.ndarray | None = None):
    """A slice and its mask as frd-score builds them from a PNG: 1 x H x W float32 with spacing 1, the
    mask all ones less the corner voxel (frd-score's workaround for a pyradiomics bug with full masks)."""
    import SimpleITK as sitk

    pixels = np.zeros((height, width), np.float32) if image is None else image.astype(np.float32)
    sitk_image = sitk.GetImageFromArray(pixels[np.newaxis])
    sitk_image.SetSpacing((1.0, 1.0, 1.0))
    mask = np.ones((1, height, width), dtype=np.uint8)
    mask[0, 0, 0] = 0
    sitk_mask = sitk.GetImageFromArray(mask)
    sitk_mask.SetSpacing((1.0, 1.0, 1.0))
    return sitk_image, sitk_mask


def _mask_counts(mask) -> tuple[float, float]:
    """pyradiomics' VoxelNum and VolumeNum diagnostics of a mask (label 1, fully connected components)."""
    import SimpleITK as sitk

    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(mask)
    components = sitk.ConnectedComponentImageFilter()
    components.FullyConnectedOn()
    components.Execute(mask == LABEL)
    return float(shape.GetNumberOfPixels(LABEL)), float(components.GetObjectCount())


@cache
def geometry(height: int, width: int) -> Geometry:
    """pyradiomics' resampleImage grid and checkMask crop for a height x width slice, computed as it does."""
    import SimpleITK as sitk

    image, mask = _sitk_pair(height, width)
    original_counts = _mask_counts(mask)
    mask_spacing = np.array(mask.GetSpacing())
    spacing = np.where(np.array(RESAMPLED_SPACING) == 0, mask_spacing, np.array(RESAMPLED_SPACING))
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(mask)
    box = np.array(shape.GetBoundingBox(LABEL))
    dims = mask.GetDimension()
    mask_size = np.array(mask.GetSize())
    spacing = np.where(box[dims:] != 1, spacing, mask_spacing)
    ratio = mask_spacing / spacing
    lower = np.floor((box[:dims] - 0.5) * ratio - PAD_DISTANCE)
    upper = np.ceil((box[:dims] + box[dims:] - 0.5) * ratio + PAD_DISTANCE)
    max_upper = np.ceil(mask_size * ratio) - 1
    lower = np.where(lower < 0, 0, lower)
    upper = np.where(upper > max_upper, max_upper, upper)
    new_size = np.array(upper - lower + 1, dtype="int").tolist()
    origin_index = np.array(0.5 * (spacing - mask_spacing) / mask_spacing) + lower / ratio
    new_origin = mask.TransformContinuousIndexToPhysicalPoint(origin_index)
    resampler = _resampler(tuple(spacing), tuple(new_size), new_origin, mask.GetDirection(), mask.GetPixelID())
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampled_mask = resampler.Execute(mask)
    statistics = sitk.LabelStatisticsImageFilter()
    statistics.Execute(resampled_mask, resampled_mask)  # the bounding box depends on the mask alone
    bounds = np.array(statistics.GetBoundingBox(LABEL))  # x0, x1, y0, y1, z0, z1
    crop = tuple(slice(int(bounds[2 * k]), int(bounds[2 * k + 1]) + 1) for k in (2, 1, 0))
    mask_array = sitk.GetArrayFromImage(resampled_mask) == LABEL
    return Geometry(
        (height, width),
        new_size,
        tuple(new_origin),
        tuple(float(s) for s in spacing),
        mask_array,
        crop,
        (*original_counts, *_mask_counts(resampled_mask)),
    )


def _resampler(spacing, size, origin, direction, pixel_type):
    import SimpleITK as sitk

    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputDirection(direction)
    resampler.SetSize(size)
    resampler.SetOutputOrigin(origin)
    resampler.SetOutputPixelType(pixel_type)
    return resampler


def _stationary_wavelet(matrix: np.ndarray) -> list[np.ndarray]:
    """pyradiomics' _swt3 for one level along axes (2, 1): the bands LH, HL, HH (in the order pywt gives
    them, named with a -> L, d -> H) and then the approximation LL, each of the input's shape."""
    import pywt

    odd = [dim % 2 != 0 for dim in matrix.shape]
    data = np.pad(matrix.copy(), tuple((0, 1 if o else 0) for o in odd), "wrap")
    bands = pywt.swtn(data, pywt.Wavelet(WAVELET), level=1, start_level=0, axes=(2, 1))[0]
    trim = tuple(slice(None, -1 if o else None) for o in odd)
    details = {str(name).replace("a", "L").replace("d", "H"): band for name, band in bands.items() if name != "aa"}
    ordered = [details[name.split("-")[1]][trim] for name in IMAGE_TYPES[1:4]]
    if list(details) != [name.split("-")[1] for name in IMAGE_TYPES[1:4]]:  # pywt changed its order
        raise RuntimeError(f"PyWavelets returned the bands {list(details)}, not LH, HL, HH")
    return [*ordered, bands["aa"].copy()[trim]]


def prepare(image: np.ndarray) -> Prepared:
    """One H x W uint8 slice, through frd-score v1's pyradiomics preprocessing (see the module docstring)."""
    import SimpleITK as sitk

    height, width = image.shape
    where = geometry(height, width)
    sitk_image, _ = _sitk_pair(height, width, image)
    original = sitk.GetArrayFromImage(sitk_image).astype("float")
    diagnostics = [np.mean(original), np.min(original), np.max(original), *where.mask_diagnostics[:2]]
    normalized = sitk.Normalize(sitk_image)
    normalized *= NORMALIZE_SCALE
    resampler = _resampler(
        where.spacing,
        where.new_size,
        where.new_origin,
        normalized.GetDirection(),
        normalized.GetPixelID(),
    )
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampled = sitk.GetArrayFromImage(resampler.Execute(normalized))  # 1 x h x w float64
    inside = resampled[where.mask].astype("float")
    diagnostics += [np.mean(resampled.astype("float")), np.min(resampled), np.max(resampled)]
    diagnostics += [*where.mask_diagnostics[2:], np.mean(inside), np.min(inside), np.max(inside)]
    mask = where.mask[where.crop]
    if not np.isfinite(resampled).all():  # a zero spread: pyradiomics' binning fails on it
        return Prepared(None, mask[0], np.array(diagnostics, dtype=np.float64), np.full(len(IMAGE_TYPES), np.nan))
    cropped = [resampled[where.crop]] + [band[where.crop] for band in _stationary_wavelet(resampled)]
    # firstorder Mean as pyradiomics computes it: numpy's nanmean over the masked voxels, one row
    means = [np.nanmean(array[mask].astype("float").reshape((1, -1)), 1)[0] for array in cropped]
    return Prepared(
        np.stack([array[0] for array in cropped]),
        mask[0],
        np.array(diagnostics, dtype=np.float64),
        np.array(means, dtype=np.float64),
    )
