#!/usr/bin/env bash
# The one way heartjobs is installed: by the Makefile into .venv, by the Dockerfile into the image.
#   scripts/install.sh PYTHON [--editable] [EXTRAS]
# torch and torchvision are pinned here and installed first, so that the project's own dependency list
# (pyproject.toml) never pulls another torch build. Where they are already at these versions (the CUDA
# base image), pip keeps them.
set -euo pipefail

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

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
"$python" -m pip install --no-cache-dir -q "${editable[@]}" "$target"
