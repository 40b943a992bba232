#!/usr/bin/env bash
# Make sure the system packages heartjobs needs are installed: the OpenJPEG library (libopenjp2 >= 2.4)
# that glymur loads at run time, and a C compiler, which pyradiomics (FRD's feature extractor; it has no
# wheels for this Python) needs to build. As root it installs Debian's packages; otherwise it says what
# to install and fails. With the argument "browser" (make test) it also installs headless Chromium and its
# driver, which tests/test_report.py opens report.html in.
set -euo pipefail

missing=()
if [ "${1:-}" = browser ] && ! command -v chromedriver >/dev/null 2>&1; then
    missing+=(chromium chromium-driver)
fi
# grep reads the whole list (no -q): an early exit would break the pipe and, with pipefail, fail the test.
if ! ldconfig -p 2>/dev/null | grep 'libopenjp2\.so\.7' >/dev/null; then
    missing+=(libopenjp2-7)
fi
if ! command -v cc >/dev/null 2>&1; then
    missing+=(gcc libc6-dev)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing system packages; install them with: sudo apt-get install -y ${missing[*]}" >&2
    echo "       (or your system's openjpeg2 and C compiler packages), then run make again" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages (${missing[*]}) and apt-get is not available; install openjpeg2 (>= 2.4) and a C compiler" >&2
    exit 1
fi
echo "installing ${missing[*]} (OpenJPEG for glymur; a C compiler for pyradiomics; Chromium for the report's browser test)"
export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent on a fresh machine: update only if the first try fails.
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
