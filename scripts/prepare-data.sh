#!/usr/bin/env bash
# Make sure the prepared set that a folder of jobs trains on exists (used by `make run-all`).
#   jobs/smoke (or any folder whose jobs use data/prepared/phantom64): the embedded phantom, made here.
#   jobs (the thesis matrix): data/prepared/hipct, prepared from the HiP-CT slices in $HIPCT_SRC.
set -euo pipefail

jobs=${1:?usage: prepare-data.sh JOBS_DIR}
bin=${BIN:-.venv/bin}
hipct_src=${HIPCT_SRC:-data/hipct}

if grep -qs 'data/prepared/phantom64' "$jobs"/*.toml; then
    "$bin/heartjobs" data phantom --out data/phantom
    "$bin/heartjobs" data prepare data/phantom --out data/prepared/phantom64 --size 64
fi
if grep -qs 'data/prepared/hipct' "$jobs"/*.toml; then
    if [ -f data/prepared/hipct/manifest.json ]; then
        exit 0
    fi
    if [ ! -d "$hipct_src" ] || [ -z "$(ls -A "$hipct_src" 2>/dev/null)" ]; then
        echo "error: $hipct_src/ holds no HiP-CT slices. Put the 16-bit JPEG 2000 slices of the HiP-CT heart" >&2
        echo "       (LADAF-2020-27, 25.08 um, DOI 10.15151/ESRF-DC-572189991) in $hipct_src/ (or set HIPCT_SRC=DIR)," >&2
        echo "       then run make run-all again. Without it: make run-all JOBS=jobs/smoke (the phantom)." >&2
        exit 1
    fi
    # Every second slice, as the thesis most likely did (6613 -> 3307 images), at 256 px.
    "$bin/heartjobs" data prepare "$hipct_src" --out data/prepared/hipct --size 256 --every 2
fi
