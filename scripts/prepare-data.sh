#!/usr/bin/env bash
# Make sure the prepared sets that a folder of jobs trains on exist (used by `make run-all`): the jobs
# themselves say which (`heartjobs data needs`), and each missing one is made here:
#   data/prepared/phantom64, data/prepared/phantom32: the embedded phantom, made and prepared at 64 or 32 px.
#   data/prepared/heart64 (the demo's): the heart phantom (data phantom --kind heart), made and prepared at 64 px.
#   data/prepared/hipct (the thesis matrix): prepared from the HiP-CT slices in $HIPCT_SRC if there are any,
#   otherwise fetched from the Human Organ Atlas (what `prepare-data.sh --fetch-hipct`, make hipct, does).
set -euo pipefail

jobs=${1:?usage: prepare-data.sh JOBS_DIR | --fetch-hipct}
# the heartjobs command: the venv's, or another (make docker-run-all: HEARTJOBS="docker compose run --rm -T cli")
heartjobs=${HEARTJOBS:-${BIN:-.venv/bin}/heartjobs}
hipct_src=${HIPCT_SRC:-data/hipct}

# The thesis' heart from the Human Organ Atlas: pyramid level 1 holds the thesis' 3307 slices (each the mean
# of two full-resolution ones), area-resized to 256 px. Resumable: run it again after an interruption.
# The mirror: --source, or HEARTJOBS_HOA_SOURCE (default: the public bucket).
fetch_hipct() {
    echo "data/prepared/hipct: fetching LADAF-2020-27_heart_complete-organ_25.08um_bm05, level 1 (3307 x 2896 x 2896" \
        "uint16, 55.5 GB uncompressed) from the Human Organ Atlas; interrupted, it resumes where it stopped" >&2
    $heartjobs data fetch LADAF-2020-27_heart_complete-organ_25.08um_bm05 --level 1 --size 256 \
        --out data/prepared/hipct
}

if [ "$jobs" = --fetch-hipct ]; then
    fetch_hipct
    exit 0
fi

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
        data/prepared/heart64)
            # the demo's: slices of the procedural 3-D heart at 256 px (a few seconds), prepared at 64 px; a
            # folder there with another phantom or other slices is refused, not used
            $heartjobs data phantom --kind heart --size 256 --out data/heart-phantom
            $heartjobs data prepare data/heart-phantom --out "$folder" --size 64
            ;;
        data/prepared/hipct)
            if [ ! -d "$hipct_src" ] || [ -z "$(ls -A "$hipct_src" 2>/dev/null)" ]; then
                fetch_hipct  # no slices at hand: the same heart from the Atlas' multiscale volume
            else
                # Every second slice, as the thesis most likely did (6613 -> 3307 images), at 256 px.
                $heartjobs data prepare "$hipct_src" --out data/prepared/hipct --size 256 --every 2
            fi
            ;;
        *)
            echo "error: $folder: the jobs in $jobs train on it and it is not prepared; make it with:" >&2
            echo "       heartjobs data prepare SLICES_DIR --out $folder --size N" >&2
            exit 1
            ;;
    esac
done <<<"$needs"
