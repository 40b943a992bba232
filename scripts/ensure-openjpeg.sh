#!/usr/bin/env bash
# Make sure the OpenJPEG library (libopenjp2, >= 2.4) that glymur loads at run time is installed.
# As root it installs Debian's libopenjp2-7; otherwise it says what to install and fails.
set -euo pipefail

# grep reads the whole list (no -q): an early exit would break the pipe and, with pipefail, fail the test.
if ldconfig -p 2>/dev/null | grep 'libopenjp2\.so\.7' >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: the OpenJPEG library is missing; install it with: sudo apt-get install -y libopenjp2-7" >&2
    echo "       (or your system's openjpeg2 package), then run make again" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the OpenJPEG library is missing and apt-get is not available; install openjpeg2 (>= 2.4)" >&2
    exit 1
fi
echo "installing libopenjp2-7 (OpenJPEG, needed by glymur)"
export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent on a fresh machine: update only if the first try fails.
apt-get install -y -q --no-install-recommends libopenjp2-7 >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends libopenjp2-7 >/dev/null
}
