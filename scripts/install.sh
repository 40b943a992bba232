#!/usr/bin/env bash
# The one way heartjobs is installed: by the Makefile into .venv, by the Dockerfile into the image.
#   scripts/install.sh PYTHON [--editable] [EXTRAS]
# torch and torchvision are pinned here and installed first, so that the project's own dependency list
# (pyproject.toml) never pulls another torch build. Where they are already at these versions (the CUDA
# base image), pip keeps them.
set -euo pipefail

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
# pyradiomics (frd-score's feature extractor) has no wheels for this Python and its build imports numpy,
# so it is built here, without build isolation, after numpy and the build tools. Its 3.1.0 source release
# carries broken build metadata (it imports versioneer, which it does not declare); 3.0.1 builds.
RADIOMICS_PIN=pyradiomics==3.0.1

python=${1:?usage: install.sh PYTHON [--editable] [EXTRAS]}
shift
editable=()
if [ "${1:-}" = "--editable" ]; then
    editable=(-e)
    shift
fi
target=.
if [ -n "${1:-}" ]; then
    target=".[$1]"
fi
"$python" -m pip install --no-cache-dir -q "${TORCH_PINS[@]}"
"$python" -m pip install --no-cache-dir -q numpy setuptools wheel
"$python" -m pip install --no-cache-dir -q --no-build-isolation "$RADIOMICS_PIN"
"$python" -m pip install --no-cache-dir -q "${editable[@]}" "$target"
