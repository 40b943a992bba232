#!/usr/bin/env bash
# `make slurm-test`, inside `scripts/slurm-ci.sh run` (a real single-node Slurm without accounting):
# the Slurm tests (tests/test_slurm.py), then two of the smoke jobs (the thesis' GAN and WGAN, each
# measured with FID, KID and FRD: one CPU each, side by side on the node) as a user would submit them,
#   heartjobs submit jobs/smoke/gan.toml jobs/smoke/wgan.toml --executor slurm --wait
# in a scratch project folder (the prepared phantom linked in, artifacts of its own), checked to end
# with every job done exactly once, and a second submission that submits nothing. (The four smoke models
# run end to end in make study-smoke; the Slurm tests submit arrays of their own.)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
BIN=${BIN:-$repo/.venv/bin}
[ -n "${SLURM_CONF:-}" ] || { echo "slurm-test: no SLURM_CONF; run through: bash scripts/slurm-ci.sh run $0" >&2; exit 2; }

start=$SECONDS
"$BIN/python" -m pytest -q -m slurm tests/test_slurm.py
echo "slurm-test: tests/test_slurm.py: $((SECONDS - start)) s"

start=$SECONDS
project=$(mktemp -d /tmp/heartjobs-slurm-smoke.XXXXXX)
trap 'rm -rf "$project"' EXIT
mkdir -p "$project/jobs/smoke" "$project/data/prepared"
cp jobs/smoke/gan.toml jobs/smoke/wgan.toml "$project/jobs/smoke/"
ln -s "$repo/data/prepared/phantom64" "$project/data/prepared/phantom64"
cd "$project"
"$BIN/heartjobs" submit jobs/smoke/*.toml --executor slurm --wait
again=$("$BIN/heartjobs" submit jobs/smoke/*.toml --executor slurm)
echo "$again"
"$BIN/python" - "$project" <<'PY'
import sys
from pathlib import Path

from heartjobs.store.rundir import RunDir, versions
from heartjobs.spec.loading import parse_spec

project = Path(sys.argv[1])
problems = []
for spec_file in sorted((project / "jobs" / "smoke").glob("*.toml")):
    name = parse_spec(spec_file).name
    found = versions(project / "artifacts" / name)
    if len(found) != 1:
        problems.append(f"{name}: {len(found)} versions, not exactly one")
    elif RunDir(found[0]).status().state != "done" or not (found[0] / RunDir.FID_REPORT).is_file():
        problems.append(f"{found[0]}: not done with its fid.json")
    else:
        print(f"slurm-test: {name}: done once, in {found[0].name}")
submissions = versions(project / "submissions")
if len(submissions) != 1:
    problems.append(f"{len(submissions)} submissions, not one")
if problems:
    sys.exit("slurm-test: " + "; ".join(problems))
PY
case $again in
    *"nothing to submit"*) ;;
    *) echo "slurm-test: the second submission submitted something" >&2; exit 1 ;;
esac
echo "slurm-test: two smoke jobs through Slurm: $((SECONDS - start)) s"
