#!/usr/bin/env bash
# The one way heartjobs is installed: by the Makefile into .venv, by the Dockerfile into the image, and
# from a wheelhouse (scripts/wheelhouse.py) on a machine that reaches no package index.
#   scripts/install.sh PYTHON [--editable] [EXTRAS]
#   scripts/install.sh PYTHON --deps-only   (what the project needs, not the project: the Dockerfile's
#                                             cached layer, so a code change does not reinstall torch)
#   scripts/install.sh --offline DIR [--venv PATH] [--python PYTHON]   (make install OFFLINE=DIR)
# torch and torchvision are pinned here and installed first, so that the project's own dependency list
# (pyproject.toml) never pulls another torch build. Where they are already at these versions (the CUDA
# base image), pip keeps them.
set -euo pipefail

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
# pyradiomics (frd-score's feature extractor) has no wheels for this Python and its build imports numpy,
# so it is built here, without build isolation, after numpy and the build tools. Its 3.1.0 source release
# carries broken build metadata (it imports versioneer, which it does not declare); 3.0.1 builds.
RADIOMICS_PIN=pyradiomics==3.0.1

if [ "${1:-}" = "--offline" ]; then
    shift
    exec bash "$(dirname "$0")/install-offline.sh" "$@"
fi

python=${1:?usage: install.sh PYTHON [--editable] [EXTRAS] | install.sh --offline DIR [--venv PATH] [--python PYTHON]}
shift
deps_only=
if [ "${1:-}" = "--deps-only" ]; then
    deps_only=1
    shift
fi
editable=()
if [ "${1:-}" = "--editable" ]; then
    editable=(-e)
    shift
fi
target=.
if [ -n "${1:-}" ]; then
    target=".[$1]"
fi
# pip's cache is left on: the Dockerfile keeps it in a BuildKit cache mount (never in a layer), so a
# rebuild does not download torch again; PIP_NO_CACHE_DIR=1 turns it off.
"$python" -m pip install -q "${TORCH_PINS[@]}"
"$python" -m pip install -q numpy setuptools wheel
"$python" -m pip install -q --no-build-isolation "$RADIOMICS_PIN"
if [ -n "$deps_only" ]; then
    # the project's own dependency list, read from pyproject.toml (tomllib: Python >= 3.11)
    mapfile -t deps < <("$python" -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')")
    "$python" -m pip install -q "${deps[@]}"
    exit 0
fi
"$python" -m pip install -q "${editable[@]}" "$target"
