#!/usr/bin/env bash
# make wheelhouse-test: the air-gapped install for real. Builds the wheelhouse (no torch), then plays a
# CUDA box that has its own PyTorch and reaches no index: the system's Python, whose user site holds
# torch and torchvision and nothing else of heartjobs' (the torch .venv installed, linked in); every
# index and proxy pointing at a closed port. scripts/install.sh --offline makes a fresh venv from the
# wheelhouse alone, with the wheelhouse's own OpenJPEG (--bundled-openjpeg), then that venv makes the
# phantom, prepares it and runs the smoke GAN job (shortened) with FID, KID and FRD. Fails on any step.
#   BIN=.venv/bin bash scripts/wheelhouse-test.sh [WHEELHOUSE]   (built there unless it exists)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
wheelhouse=${1:-dist/wheelhouse}
work=$(mktemp -d /tmp/heartjobs-wheelhouse-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "wheelhouse-test: FAILED: $*" >&2
    exit 1
}

# the box's Python: the system's own (BOX_PYTHON), which has no numpy, pydantic or torch of its own
python=${BOX_PYTHON:-/usr/bin/python3}
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if "$python" -s -c 'import numpy' 2>/dev/null || "$python" -s -c 'import pydantic' 2>/dev/null; then
    fail "$python has numpy or pydantic of its own: the wheelhouse's would go untested (set BOX_PYTHON)"
fi
start=$SECONDS
if [ ! -f "$wheelhouse/manifest.json" ]; then
    "$BIN/python" scripts/wheelhouse.py --out "$wheelhouse" --python-version "$version"
fi
echo "wheelhouse-test: wheelhouse ready: $((SECONDS - start)) s"

# the box's own PyTorch: torch, torchvision and what they need but numpy (which heartjobs requires too, so
# it must come from the wheelhouse), in the user site of this machine's Python
export PYTHONUSERBASE=$work/box
site=$("$python" -c 'import site; print(site.getusersitepackages())')
mkdir -p "$site"
"$BIN/python" - "$site" <<'PY'
import importlib.metadata as md, os, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
site, keep_out = sys.argv[1], {"numpy"}
wanted, seen = [Requirement("torch"), Requirement("torchvision")], set()
while wanted:  # (a distribution with the extras asked of it: cuda-toolkit[cudart, ...])
    asked = wanted.pop()
    name = canonicalize_name(asked.name)
    if (name, frozenset(asked.extras)) in seen or name in keep_out:
        continue
    seen.add((name, frozenset(asked.extras)))
    dist = md.distribution(name)
    for requirement in map(Requirement, dist.requires or []):
        extras = ["", *asked.extras]
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras):
            wanted.append(requirement)
    for top in {f.parts[0] for f in dist.files or []} - {"..", "bin"}:
        source, link = dist.locate_file(top), os.path.join(site, top)
        if os.path.exists(source) and not os.path.lexists(link):
            os.symlink(source, link)
print(f"wheelhouse-test: the box's torch: {len({n for n, _ in seen})} distributions linked into {site}")
PY
"$python" -c 'import torch; print("wheelhouse-test: the box has torch", torch.__version__)'

# no index anywhere: any access fails at once
export PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_EXTRA_INDEX_URL=http://127.0.0.1:9/simple
export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
export XDG_CONFIG_HOME=$work/config TORCH_HOME=$work/torch HEARTJOBS_CACHE=$work/cache
start=$SECONDS
bash scripts/install.sh --offline "$wheelhouse" --venv "$work/venv" --python "$python" --bundled-openjpeg
echo "wheelhouse-test: offline install: $((SECONDS - start)) s"
venv=$work/venv
"$venv/bin/python" -c 'import glymur, sys
lib = str(glymur.lib.openjp2.OPENJP2._name)
sys.exit(0 if "/venv/opt/openjpeg/" in lib else "glymur loads %s, not the wheelhouse OpenJPEG" % lib)'
# (-P: not the checkout's heartjobs from the current folder)
"$venv/bin/python" -P -c 'import heartjobs, numpy, torch, sys
where = {m.__name__: m.__file__ for m in (heartjobs, numpy, torch)}
expected = {"heartjobs": sys.prefix, "numpy": sys.prefix, "torch": sys.argv[1]}
sys.exit(0 if all(where[n].startswith(p) for n, p in expected.items()) else f"not from the venv or the box: {where}")' \
    "$PYTHONUSERBASE"

start=$SECONDS
project=$work/project
mkdir -p "$project/jobs"
# the smoke GAN shortened as docker-test shortens it (4 epochs, FID on 100, FRD on 50): what is under test
# is the install, which every stage of the job uses (glymur, torch, pytorch-fid, frd-score, pyradiomics)
sed -e 's/^epochs = 20/epochs = 4/' -e 's/^sample_every = 5/sample_every = 2/' -e 's/^checkpoint_every = 5/checkpoint_every = 2/' \
    -e 's/^n_generated = 200/n_generated = 100/' -e 's/^frd_n = 100/frd_n = 50/' jobs/smoke/gan.toml >"$project/jobs/gan.toml"
cd "$project"
"$venv/bin/heartjobs" data phantom --out data/phantom >"$work/data.log" 2>&1 || { tail -n 5 "$work/data.log" >&2; fail "the phantom"; }
"$venv/bin/heartjobs" data prepare data/phantom --out data/prepared/phantom64 --size 64 >>"$work/data.log" 2>&1 || { tail -n 5 "$work/data.log" >&2; fail "preparing the phantom"; }
"$venv/bin/heartjobs" run jobs/gan.toml >"$work/smoke.log" 2>&1 || { tail -n 20 "$work/smoke.log" >&2; fail "the smoke job"; }
"$venv/bin/python" -c 'import json, sys
fid = json.load(open("artifacts/smoke_gan/v0001/fid.json"))
ok = fid["fid_mean"] > 0 and "mean" in (fid.get("frd") or {})
print("wheelhouse-test: smoke_gan: FID %.3f, FRD %s" % (fid["fid_mean"], fid.get("frd", {}).get("mean")))
sys.exit(0 if ok else "fid.json lacks FID or FRD")'
echo "wheelhouse-test: the smoke job from the offline venv: $((SECONDS - start)) s"
echo "wheelhouse-test: ok"
