#!/usr/bin/env bash
# install-bench-deps.sh - installs the Debian/Ubuntu packages the peer
# benchmarks compare shoal with, when they are missing. Used by `make
# bench-deps`, and so by `make bench-hnsw` and `make bench-flat`. Quick when
# everything is present: it only asks dpkg.
#
#   libhnswlib-dev  hnswlib's headers, for bench/hnswlib_bench.cpp (bench-hnsw)
#   python3-faiss   Faiss's exact index, for bench/faiss_flat.py (bench-flat);
#   python3-numpy   run by Debian's own /usr/bin/python3, not a python3 from
#                   PATH, which may be another interpreter without these.
#
# Not part of `make deps`: building and testing shoal needs none of them.
set -euo pipefail

packages=(libhnswlib-dev python3-faiss python3-numpy)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "bench-deps: all ${#packages[@]} packages present"
    exit 0
fi

echo "bench-deps: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "bench-deps: installing needs root. Run as root (or with sudo):" >&2
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
echo "bench-deps: installed ${missing[*]}"
