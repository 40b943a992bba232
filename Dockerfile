# heartjobs: train and measure GANs on heart CT slices, one job spec per `docker compose run gpu-job JOB`.
#
# The base is PyTorch's own CUDA runtime image, pinned by tag to the torch release scripts/install.sh pins
# (2.14.1, whose default CUDA build is 13.0), so the install below keeps the image's torch instead of
# pulling a second one. The image's Python must be >= 3.11 (glymur 0.14.8); the check below fails the
# build otherwise. Override with --build-arg BASE_IMAGE=... for another CUDA version.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# OpenJPEG for glymur, and a C compiler for pyradiomics (FRD), which scripts/install.sh builds from source
# (it has no wheels for this Python). Debian/Ubuntu package versions are not pinned: the base tag pins the
# distribution release, and pinned patch versions disappear from its archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenjp2-7 gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -c "import sys; assert sys.version_info >= (3, 11), f'heartjobs needs Python >= 3.11, found {sys.version}'"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY heartjobs/ heartjobs/
# The same install command as `make install` (scripts/install.sh), without the dev tools.
RUN bash scripts/install.sh python

# pytorch-fid's standard Inception weights, fetched through pytorch-fid's own loader into TORCH_HOME and
# checked against the sha256 prefix in their file name. --build-arg FID_WEIGHTS=skip builds without network.
ENV TORCH_HOME=/opt/torch
ARG FID_WEIGHTS=download
RUN mkdir -p "$TORCH_HOME" \
    && if [ "$FID_WEIGHTS" = "download" ]; then \
        python -c "from heartjobs.evaluation.weights import resolve_weights; w = resolve_weights('standard'); print(w.path, w.sha256)"; \
    fi \
    && chmod -R a+rX "$TORCH_HOME"

COPY jobs/ jobs/

# A non-root user; compose can run as the host's uid (user: "${UID}:${GID}") so artifacts belong to it.
ARG UID=1000
RUN useradd --uid "${UID}" --create-home --shell /bin/bash heartjobs \
    && mkdir -p /app/data /app/artifacts /app/queue \
    && chown heartjobs /app/artifacts /app/queue
ENV HOME=/home/heartjobs \
    HEARTJOBS_CACHE=/app/artifacts/.cache \
    PYTHONUNBUFFERED=1
USER ${UID}

# `docker compose run gpu-job jobs/wgan_ldim200.toml`: the argument is the job file.
ENTRYPOINT ["heartjobs", "run"]
CMD ["--help"]
