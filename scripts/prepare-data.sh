#!/usr/bin/env bash
# Make sure the prepared sets that a folder of jobs trains on exist (used by `make run-all`): the jobs
# themselves say which (`heartjobs data needs`), and each missing one is made here:
#   data/prepared/phantom64, data/prepared/phantom32: the embedded phantom, made and prepared at 64 or 32 px.
#   data/prepared/hipct: prepared from the HiP-CT slices in $HIPCT_SRC (the thesis matrix).
set -euo pipefail

jobs=${1:?usage: prepare-data.sh JOBS_DIR}
# the heartjobs command: the venv's, or another (make docker-run-all: HEARTJOBS="docker compose run --rm -T cli")
heartjobs=${HEARTJOBS:-${BIN:-.venv/bin}/heartjobs}
hipct_src=${HIPCT_SRC:-data/hipct}

specs=()
for spec in "$jobs"/*.toml; do
    case $spec in
        *.sweep.toml) ;;
        *) specs+=("$spec") ;;
    esac
done
if [ ${#specs[@]} -eq 0 ]; then
    echo "error: $jobs holds no job specs (*.toml)" >&2
    exit 2
fi
needs=$($heartjobs data needs "${specs[@]}")  # a bad spec: its error line, and this script stops

while IFS=$'\t' read -r folder state; do
    [ "$state" = missing ] || continue
    case $folder in
        data/prepared/phantom64 | data/prepared/phantom32)
            [ -d data/phantom ] || $heartjobs data phantom --out data/phantom
            $heartjobs data prepare data/phantom --out "$folder" --size "${folder#data/prepared/phantom}"
            ;;
        data/prepared/hipct)
            if [ ! -d "$hipct_src" ] || [ -z "$(ls -A "$hipct_src" 2>/dev/null)" ]; then
                echo "error: $hipct_src/ holds no HiP-CT slices. Put the 16-bit JPEG 2000 slices of the HiP-CT heart" >&2
                echo "       (LADAF-2020-27, 25.08 um, DOI 10.15151/ESRF-DC-572189991) in $hipct_src/ (or set HIPCT_SRC=DIR)," >&2
                echo "       then run make run-all again. Without it: make run-all JOBS=jobs/smoke (the phantom)." >&2
                exit 1
            fi
            # Every second slice, as the thesis most likely did (6613 -> 3307 images), at 256 px.
            $heartjobs data prepare "$hipct_src" --out data/prepared/hipct --size 256 --every 2
            ;;
        *)
            echo "error: $folder: the jobs in $jobs train on it and it is not prepared; make it with:" >&2
            echo "       heartjobs data prepare SLICES_DIR --out $folder --size N" >&2
            exit 1
            ;;
    esac
done <<<"$needs"
