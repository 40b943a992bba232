#!/usr/bin/env bash
# make demo, step by step: the heart phantom made and prepared at 64 px, the validity ladder in the demo
# jobs' feature space, each demo job (jobs/demo/*.toml) queued and run by a worker, then the report. Each
# step is announced with what it does and how long it took on 2 cores (the job's from its spec's
# "# demo:" line; docs/demo.md has the measured table), and ends with its own time and the total.
#   DEMO_JOBS (jobs/demo), ARTIFACTS (artifacts/demo), QUEUE (queue/demo), BIN (.venv/bin), and
#   LADDER_OPTIONS (the ladder in the demo jobs' feature space: --weights untrained --dims 192 --n 100)
set -euo pipefail

scripts=$(dirname "$0")
bin=${BIN:-.venv/bin}
heartjobs=$bin/heartjobs
jobs=${DEMO_JOBS:-jobs/demo}
artifacts=${ARTIFACTS:-artifacts/demo}
queue=${QUEUE:-queue/demo}
read -r -a ladder_options <<<"${LADDER_OPTIONS:---weights untrained --dims 192 --n 100}"

specs=("$jobs"/*.toml)
if [ ! -f "${specs[0]}" ]; then
    echo "error: $jobs holds no job specs (*.toml)" >&2
    exit 2
fi
# the set the jobs train on (a bad spec: its one-line error, before any work)
prepared=$($heartjobs data needs "${specs[@]}" | cut -f1 | sort -u | tr '\n' ' ')
prepared=${prepared% }
if [[ $prepared == *" "* ]]; then
    echo "error: $jobs: the demo's jobs must train on one prepared set, not $prepared" >&2
    exit 2
fi

total=$((${#specs[@]} + 3))
step=0
started=$SECONDS
# announce STEP TEXT EXPECTED: "[n/N] text (about E on 2 cores)"; done: the step's time and the total
announce() {
    step=$((step + 1))
    step_started=$SECONDS
    printf '\n[%d/%d] %s (%s)\n' "$step" "$total" "$1" "$2"
}
finished() {
    local took=$((SECONDS - step_started)) all=$((SECONDS - started))
    printf '[%d/%d] done in %d s; %d min %02d s so far\n' "$step" "$total" "$took" $((all / 60)) $((all % 60))
}

announce "data: the heart phantom (200 slices of a procedural 3-D heart) prepared at 64 px into $prepared" \
    "about 12 s on 2 cores; nothing to do when it exists"
BIN=$bin bash "$scripts/prepare-data.sh" "$jobs"
finished

announce "validity ladder: which metric this data can trust for which question, at the jobs' sizes" \
    "about 45 s on 2 cores"
$heartjobs ladder "$prepared" "${ladder_options[@]}" --out "$artifacts/ladder"
finished

for spec in "${specs[@]}"; do
    # the spec's own line: "# demo: GAN, 350 epochs; about 95 s on 2 cores"
    about=$(sed -n 's/^# demo: //p' "$spec" | head -n 1)
    case $about in
        *"; "*) announce "job $(basename "$spec" .toml): ${about%%; *}" "${about#*; }" ;;
        *) announce "job $(basename "$spec" .toml)" "its time not measured: the spec has no '# demo: WHAT; TIME' line" ;;
    esac
    $heartjobs enqueue "$spec" --queue "$queue" >/dev/null
    $heartjobs worker --queue "$queue" --until-empty
    finished
done

announce "report: the summary, its figures and report.html" "about 5 s on 2 cores"
$heartjobs report "$artifacts" --jobs "$jobs"
finished
