#!/usr/bin/env bash
# make demo, step by step: the install (make passes it as INSTALL), the prepared set the demo jobs train on
# (the heart phantom at 64 px, made when missing), the validity ladder in the jobs' feature space, each demo
# job (jobs/demo/*.toml) queued and run by a worker, then the report. Each step is announced with what it
# does and how long it took on 2 cores (a job's from its spec's "# demo: WHAT; about TIME on 2 cores" line;
# docs/demo.md has the measured table), and ends with its own time and the total. Exits 1 when a job
# failed (after the report), 2 on specs it cannot run.
#   INSTALL (a command; none: no install step), DEMO_JOBS (jobs/demo), ARTIFACTS (artifacts/demo: where the
#   jobs' [output] root puts their runs), QUEUE (queue/demo), BIN (.venv/bin), and LADDER_OPTIONS (the
#   ladder in the demo jobs' feature space: --weights untrained --dims 192 --n 100)
set -euo pipefail

scripts=$(dirname "$0")
bin=${BIN:-.venv/bin}
heartjobs=$bin/heartjobs
jobs=${DEMO_JOBS:-jobs/demo}
artifacts=${ARTIFACTS:-artifacts/demo}
queue=${QUEUE:-queue/demo}
install=${INSTALL:-}
read -r -a ladder_options <<<"${LADDER_OPTIONS:---weights untrained --dims 192 --n 100}"

specs=()
for spec in "$jobs"/*.toml; do
    case $spec in
        *.sweep.toml) ;;
        *) [ -f "$spec" ] && specs+=("$spec") ;;
    esac
done
if [ ${#specs[@]} -eq 0 ]; then
    echo "error: $jobs holds no job specs (*.toml)" >&2
    exit 2
fi

total=$((${#specs[@]} + 3 + (${#install} > 0 ? 1 : 0)))
step=0
started=$SECONDS
# announce TEXT EXPECTED: "[n/N] text (expected)"; finished: the step's time and the total so far
announce() {
    step=$((step + 1))
    step_started=$SECONDS
    printf '\n[%d/%d] %s (%s)\n' "$step" "$total" "$1" "$2"
}
finished() {
    local took=$((SECONDS - step_started)) all=$((SECONDS - started))
    printf '[%d/%d] done in %d s; %d min %02d s so far\n' "$step" "$total" "$took" $((all / 60)) $((all % 60))
}

if [ -n "$install" ]; then
    announce "install: .venv with PyTorch, pyradiomics (built) and heartjobs" \
        "about 100 s on 2 cores the first time with this project's package index; seconds after"
    eval "$install"
    finished
fi

# the set the jobs train on (a bad spec: its one-line error, before any data is made or job is run)
prepared=$($heartjobs data needs "${specs[@]}" | cut -f1 | sort -u | tr '\n' ' ')
prepared=${prepared% }
if [[ $prepared == *" "* ]]; then
    echo "error: $jobs: the demo's jobs must train on one prepared set, not $prepared" >&2
    exit 2
fi

announce "data: $prepared (for jobs/demo: the heart phantom, 200 slices of a procedural 3-D heart, at 64 px)" \
    "about 12 s on 2 cores; seconds when it exists"
BIN=$bin bash "$scripts/prepare-data.sh" "$jobs"
finished

announce "validity ladder: which metric this data can trust for which question, at the jobs' sizes" \
    "about 45 s on 2 cores"
$heartjobs ladder "$prepared" "${ladder_options[@]}" --out "$artifacts/ladder"
finished

failed_jobs() { find "$queue/failed" -name '*.json' 2>/dev/null | wc -l || true; }  # no queue yet: 0
failed_before=$(failed_jobs)
for spec in "${specs[@]}"; do
    # the spec's own line: "# demo: GAN, 350 epochs; about 70 s on 2 cores"
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

failed=$(($(failed_jobs) - failed_before))
if [ "$failed" -gt 0 ]; then
    echo "error: $failed demo job(s) failed; their logs are in $queue/failed/" >&2
    exit 1
fi
