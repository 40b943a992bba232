#!/usr/bin/env bash
# heartjobs from a wheelhouse (scripts/wheelhouse.py, `make wheelhouse`) on a machine that reaches no
# package index:  scripts/install.sh --offline DIR [--venv PATH] [--python PYTHON] [--bundled-openjpeg]
# (make install OFFLINE=DIR)
# 1. checks every file against the wheelhouse's SHA256SUMS, and the Python against the one it was built for;
# 2. makes the venv (default .venv): with --system-site-packages when PYTHON already has torch >= 2.4 (a
#    CUDA box's own build, which is then used), else plain, and torch must be in the wheelhouse;
# 3. pip-installs heartjobs and its requirements from DIR alone: no index, no pip configuration (so no
#    other find-links either); source releases (pyradiomics for another Python) compile here;
# 4. unpacks the OpenJPEG library into the venv and names it in glymur's configuration file when glymur
#    finds no OpenJPEG >= 2.4 here (or --bundled-openjpeg: always, e.g. to use a known version); puts the FID weights where heartjobs looks when the wheelhouse has them;
# 5. reports what it set up: heartjobs' version, glymur's OpenJPEG, torch and CUDA, FRD or not.
set -euo pipefail

usage="usage: scripts/install.sh --offline DIR [--venv PATH] [--python PYTHON] [--bundled-openjpeg]"
die() {
    echo "error: install --offline: $*" >&2
    exit 2
}
[ $# -ge 1 ] || die "$usage"
dir=$1
shift
venv=.venv
python=python3
bundled_openjpeg=
while [ $# -gt 0 ]; do
    case $1 in
    --venv) venv=${2:?$usage}; shift 2 ;;
    --python) python=${2:?$usage}; shift 2 ;;
    --bundled-openjpeg) bundled_openjpeg=1; shift ;;
    *) die "unknown option '$1' ($usage)" ;;
    esac
done
[ -f "$dir/manifest.json" ] && [ -f "$dir/SHA256SUMS" ] \
    || die "$dir: no manifest.json and SHA256SUMS here (make one with scripts/wheelhouse.py)"
dir=$(cd "$dir" && pwd)
command -v "$python" >/dev/null || die "no $python here (pass --python)"

if ! bad=$(cd "$dir" && sha256sum --quiet --check SHA256SUMS 2>&1); then
    die "$dir: $(echo "$bad" | head -n 1) (the wheelhouse differs from its SHA256SUMS: copy it again)"
fi
manifest() { # a manifest field, as text (lists one item a line)
    "$python" -c 'import json, sys
try:
    v = json.load(open(sys.argv[1]))[sys.argv[2]]
except (OSError, ValueError, KeyError) as exc:
    sys.exit(f"error: install --offline: {sys.argv[1]}: no readable {sys.argv[2]!r} ({type(exc).__name__})")
print("\n".join(v) if isinstance(v, list) else v)' "$dir/manifest.json" "$1" || exit 2
}
wanted=$(manifest python_version)
here=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$here" = "$wanted" ] || die "$dir was built for Python $wanted, $python is $here (build it with PYTHON_VERSION=$here)"

torch_here=$("$python" -c 'import torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
print(torch.__version__ if (major, minor) >= (2, 4) else "")' 2>/dev/null || true)
if [ -n "$torch_here" ]; then
    venv_args=(--system-site-packages)
    torch_note="this Python's own torch $torch_here (the venv sees its packages)"
elif compgen -G "$dir/torch-*.whl" >/dev/null; then
    venv_args=()
    torch_note="torch from the wheelhouse"
else
    die "$python has no torch >= 2.4 and $dir has none: install your site's PyTorch for $python first, or build the wheelhouse with WITH_TORCH=1"
fi
if [ -x "$venv/bin/python" ]; then
    echo "install --offline: into the existing venv $venv"
    venv_version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$venv_version" = "$wanted" ] || die "$venv is a Python $venv_version venv, $dir is for $wanted: remove $venv or pass --venv"
else
    "$python" -m venv "${venv_args[@]}" "$venv" || die "'$python -m venv' failed (Debian: apt-get install python3-venv)"
fi
vpy=$venv/bin/python
if [ -n "$torch_here" ]; then
    # PYTHON may itself be a venv (a CUDA image's /opt/venv): --system-site-packages reaches only its base
    # interpreter's packages, so its own site folders are named in a .pth, after the venv's own
    # (as site.addsitedir lines, so that the .pth files in those folders are read too)
    "$python" -c 'import site, sys
if sys.prefix != sys.base_prefix:
    print("\n".join(f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()))' \
        >"$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_heartjobs_system_site.pth"
    "$vpy" -c 'import torch' 2>/dev/null \
        || die "the venv $venv does not see $python's torch (made without --system-site-packages?): remove it or pass --venv"
fi

# only the wheelhouse: no index, and no pip configuration that could name another source
# (--find-links on the command line: pip splits PIP_FIND_LINKS at spaces)
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
pip_install() { "$vpy" -m pip install -q --find-links "$dir" "$@"; }
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
manifest install >"$requirements"
if compgen -G "$dir/*.tar.gz" >/dev/null; then # source releases compile against these, without isolation
    pip_install setuptools wheel numpy || die "the build tools for the source releases did not install"
fi
heartjobs_wheel=$(compgen -G "$dir/heartjobs-*.whl" | head -n 1) || die "$dir has no heartjobs wheel"
# (--force-reinstall: a venv with the same version number from an older wheelhouse gets this one's code)
pip_install --no-deps --force-reinstall "$heartjobs_wheel" || die "heartjobs' wheel did not install"
pip_install --no-build-isolation -r "$requirements" \
    || die "its requirements did not install from $dir alone (pip's message is above)"

if [ -n "$bundled_openjpeg" ] \
    || ! "$vpy" -c 'import glymur, sys; sys.exit(glymur.version.openjpeg_version_tuple < (2, 4, 0))' 2>/dev/null; then
    deb=$(compgen -G "$dir/libopenjp2-7_*.deb" | head -n 1) || die "glymur finds no OpenJPEG >= 2.4 and $dir has no libopenjp2-7 package"
    mkdir -p "$venv/opt/openjpeg"
    if command -v dpkg-deb >/dev/null; then
        dpkg-deb -x "$deb" "$venv/opt/openjpeg"
    else # binutils' ar and tar, where there is no dpkg
        unpacked=$(mktemp -d)
        (cd "$unpacked" && ar x "$deb") || die "neither dpkg-deb nor ar here to unpack $deb"
        tar -xf "$unpacked"/data.tar.* -C "$venv/opt/openjpeg"
        rm -rf "$unpacked"
    fi
    lib=$(cd "$venv/opt/openjpeg" && pwd)/usr/lib/x86_64-linux-gnu/libopenjp2.so.7
    [ -f "$lib" ] || die "$deb holds no libopenjp2.so.7"
    config=${XDG_CONFIG_HOME:-$HOME/.config}/glymur/glymurrc
    if [ -f "$config" ] && ! grep -qxF "openjp2 = $lib" "$config"; then
        die "$config, glymur's configuration, exists: point its [library] openjp2 at $lib"
    fi
    mkdir -p "$(dirname "$config")"
    printf '[library]\nopenjp2 = %s\n' "$lib" >"$config"
    echo "install --offline: OpenJPEG unpacked into $venv/opt/openjpeg, named in $config (glymur's configuration)"
fi

weights=$(compgen -G "$dir/weights/*.pth" | head -n 1 || true)
if [ -n "$weights" ]; then
    target=$("$vpy" -c 'from heartjobs.evaluation.weights import hub_path; print(hub_path())')
    mkdir -p "$(dirname "$target")"
    if ! { cp "$weights" "$target.tmp" && mv "$target.tmp" "$target"; }; then
        die "could not put the FID weights at $target"
    fi
    echo "install --offline: FID weights (sha256 checked) in $target"
fi

echo "install --offline: $("$venv/bin/heartjobs" --version) in $venv from $dir"
echo "install --offline: torch: $torch_note; $("$vpy" -c 'import torch; print("CUDA " + torch.version.cuda + ", " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible") if torch.version.cuda else "CPU build")')"
echo "install --offline: glymur's OpenJPEG $("$vpy" -c 'import glymur; print(glymur.version.openjpeg_version)')"
if "$vpy" -c 'import frd_score, radiomics' 2>/dev/null; then
    echo "install --offline: FRD: available"
else
    echo "install --offline: FRD: not installed (a --lean wheelhouse): FID and KID work; set [eval] frd = false"
fi
