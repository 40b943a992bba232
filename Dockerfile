# heartjobs: train and measure GANs on heart CT slices, one job spec per `docker compose run gpu-job JOB`.
#
# The base is PyTorch's own CUDA runtime image, pinned by tag to the torch release scripts/install.sh pins
# (2.14.1, whose default CUDA build is 13.0), so the install below keeps the image's torch instead of
# pulling a second one. Any base with Python >= 3.11 works (glymur 0.14.8; the check below fails the build
# otherwise): heartjobs goes into a virtual environment of the image's own, which sees the base's packages.
# Override with --build-arg BASE_IMAGE=... (another CUDA version, or a plain Debian/Ubuntu Python image:
# `make docker-test` builds on a Debian bookworm base made with debootstrap).
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# OpenJPEG for glymur, and a C compiler for pyradiomics (FRD), which scripts/install.sh builds from source
# (it has no wheels for this Python), with the Python headers where the base lacks them (a distribution's
# Python: python3-dev; the pytorch image's conda Python has its own). Debian/Ubuntu package versions are not
# pinned: the base tag pins the distribution release, and pinned patch versions disappear from its archive.
# hadolint ignore=DL3008,SC2086
RUN python=$(command -v python3 || command -v python) \
    && headers=$("$python" -c "import os, sysconfig; print('' if os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) else 'python3-dev')") \
    && apt-get update \
    && apt-get install -y --no-install-recommends libopenjp2-7 gcc libc6-dev $headers \
    && rm -rf /var/lib/apt/lists/*

# The image's own virtual environment: pip may install into it on any base (PEP 668 forbids installing
# into a distribution's Python), and --system-site-packages keeps the base's torch where it has one.
ENV VIRTUAL_ENV=/opt/heartjobs
RUN python=$(command -v python3 || command -v python) \
    && "$python" -c "import sys; assert sys.version_info >= (3, 11), f'heartjobs needs Python >= 3.11, found {sys.version}'" \
    && "$python" -m venv --system-site-packages "$VIRTUAL_ENV"
ENV PATH=/opt/heartjobs/bin:$PATH

WORKDIR /app
# The same install command as `make install` (scripts/install.sh), without the dev tools: first what the
# project needs (a layer that only pyproject.toml and the install script change), then the project. pip's
# own configuration (an index, an extra index, a CA bundle for a TLS-intercepting proxy) comes in as
# BuildKit secrets, present only while these steps run, never in a layer: `docker compose build` passes
# them from PIP_CONF and PIP_CA (see compose.yaml; empty files when unset). pip's cache is a BuildKit cache
# mount, so a rebuild does not download torch again. The build folder and egg-info are removed in the
# same layer.
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_ca --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && bash scripts/install.sh python --deps-only
COPY heartjobs/ heartjobs/
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_ca --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && bash scripts/install.sh python \
    && rm -rf build ./*.egg-info

# pytorch-fid's standard Inception weights, checked against their whole sha256 (heartjobs/evaluation/
# weights.py). FID_WEIGHTS says where they come from:
#   download  (default) pytorch-fid's own loader fetches them at build time (needs the network);
#   skip      none built in: the image then takes them from a mounted file (HEARTJOBS_FID_WEIGHTS, see
#             compose.yaml's ./weights) or downloads them at run time into its writable hub folder;
#   PATH      a file in the build context, e.g. weights/pt_inception-2015-12-05-6726825d.pth.
# apt and pip need their network (or mirrors) whichever is chosen.
ENV TORCH_HOME=/opt/torch \
    HEARTJOBS_IMAGE=1
ARG FID_WEIGHTS=download
RUN --mount=type=bind,target=/context \
    mkdir -p "$TORCH_HOME/hub/checkpoints" \
    && case "$FID_WEIGHTS" in \
        download) python -c "from heartjobs.evaluation.weights import resolve_weights as r; w = r('standard'); print(w.path, w.sha256)" ;; \
        skip) ;; \
        *) cp "/context/$FID_WEIGHTS" "$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth" \
            && python -c "from heartjobs.evaluation.weights import resolve_weights as r; w = r('standard', download=False); print(w.path, w.sha256)" ;; \
    esac \
    && chmod -R a+rX "$TORCH_HOME" && chmod 1777 "$TORCH_HOME/hub/checkpoints"

COPY jobs/ jobs/

# No user is baked in: compose runs the container as the caller's uid and gid (user: HOST_UID:HOST_GID),
# any uid, root included, without a rebuild. Everything a process writes goes to folders any uid can
# write: HOME and matplotlib's config in /tmp, heartjobs' cache in the mounted artifacts folder, the device
# locks in the mounted lock folder shared with the host and the other containers.
RUN mkdir -p /app/data /app/artifacts /app/queue /app/weights /tmp/heartjobs-locks \
    && chmod 1777 /app/data /app/artifacts /app/queue /tmp/heartjobs-locks
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    HEARTJOBS_CACHE=/app/artifacts/.cache \
    HEARTJOBS_LOCK_DIR=/tmp/heartjobs-locks \
    PYTHONUNBUFFERED=1
USER 1000:1000

# The commit the image was built from (there is no .git inside): recorded in every run's env.json.
ARG GIT_COMMIT=
ENV HEARTJOBS_GIT_COMMIT=${GIT_COMMIT}
LABEL org.opencontainers.image.revision=${GIT_COMMIT}

# `docker compose run gpu-job jobs/wgan_ldim200.toml`: the argument is the job file.
ENTRYPOINT ["heartjobs", "run"]
CMD ["--help"]
