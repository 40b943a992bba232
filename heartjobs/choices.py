"""The choices a spec and the command line share, spelled once: where to compute, how generated images
become pixels for a feature extractor, and the Inception feature sizes pytorch-fid offers."""

from __future__ import annotations

from typing import Literal, get_args

# auto: a CUDA GPU when there is one, else the CPU
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
# fixed: [-1, 1] -> 0..255 for every image; per_image_minmax: each image stretched to its own min..max
Normalize = Literal["fixed", "per_image_minmax"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalize)
# pytorch-fid's InceptionV3 blocks: the pool3 features (2048) and three earlier, smaller ones
FeatureDims = Literal[64, 192, 768, 2048]
FEATURE_DIMS: tuple[int, ...] = get_args(FeatureDims)
