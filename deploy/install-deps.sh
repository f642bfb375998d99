#!/usr/bin/env bash
# install-deps.sh - installs Debian/Ubuntu packages when they are missing.
# Quick when everything is present: it only asks dpkg.
#
#   install-deps.sh                    the packages shoal builds and tests with:
#                                      `make deps` (and so `make test`) and the
#                                      ansible roles
#   install-deps.sh LABEL PACKAGE...   those packages; messages start "LABEL:"
#                                      (install-bench-deps.sh)
#
# CUDA is optional and never installed here: the build uses it when nvcc is
# found (see the Makefile) and builds CPU-only otherwise.
set -euo pipefail

label=deps
packages=(
    build-essential pkg-config
    libzmq3-dev libczmq-dev libmsgpack-dev librocksdb-dev libmicrohttpd-dev
    libcriterion-dev libopenblas-dev
    # tests/test_metrics.c: promtool lints /metrics, a real Prometheus scrapes it
    prometheus
    # the Python client (client/python) and its tests (make test-python)
    python3 python3-zmq python3-msgpack python3-numpy python3-pytest
)
if [[ $# -gt 0 ]]; then
    label=$1
    shift
    packages=("$@")
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$label: all ${#packages[@]} packages present"
    exit 0
fi

echo "$label: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "$label: installing needs root. Run as root (or with sudo):" >&2
        echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
else
    SUDO=()
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=600 -y --no-install-recommends)
# A fresh machine has no package lists yet; refresh them once, then install.
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
"${SUDO[@]}" apt-get "${apt_opts[@]}" install "${missing[@]}"
echo "$label: installed ${missing[*]}"
