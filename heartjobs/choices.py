"""The choices a spec and the command line share, spelled once: where to compute, how generated images
become pixels for a feature extractor, the Inception feature sizes pytorch-fid offers, and how FRD's
features are computed."""

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
# the feature network of FID, KID, PRDC and feature-space memorisation: pytorch-fid's InceptionV3 or
# RadImageNet's ResNet-50 (2048-d, weights supplied by the user; heartjobs.evaluation.radimagenet)
FeatureNetwork = Literal["inception", "radimagenet"]
FEATURE_NETWORKS: tuple[str, ...] = get_args(FeatureNetwork)
FEATURE_DIMS: tuple[int, ...] = get_args(FeatureDims)
# how FRD's radiomic features are computed: torch (batched, on the job's device; equal to pyradiomics within
# 1e-9, heartjobs.evaluation.radiomics_torch) or pyradiomics itself (the reference, one image per CPU)
FrdBackend = Literal["torch", "pyradiomics"]
FRD_BACKENDS: tuple[str, ...] = get_args(FrdBackend)
