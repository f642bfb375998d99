#!/usr/bin/env bash
# build-deb.sh - assembles shoal_VERSION_amd64.deb with dpkg-deb (`make deb`).
#
#   build-deb.sh VERSION OUT_DIR CPU_BIN_DIR [CUDA_BIN_DIR]
#
# CPU_BIN_DIR holds the four programs of the CPU-only build; CUDA_BIN_DIR, when
# given, those of the CUDA build. Both go to /usr/lib/shoal/{cpu,cuda}/ and
# /usr/bin/NAME is a launcher that picks the CUDA build when its libraries load
# on the host: the CUDA runtime is recommended, not required. Files are owned
# by root (dpkg-deb --root-owner-group); prints the package's path. The
# package's maintainer is DEB_MAINTAINER (default a placeholder address).
set -euo pipefail

version=$1 out=$2 cpu_bin=$3 cuda_bin=${4:-}
# Who builds it (Maintainer: and the changelog); DEB_MAINTAINER overrides.
maintainer=${DEB_MAINTAINER:-shoal developers <shoal@example.org>}
here=$(cd "$(dirname "$0")" && pwd)
programs=(shoal-coordinator shoal-shard shoal shoal-bench)
pkg=$out/shoal_${version}_amd64.deb
root=$out/root
rm -rf "$root"
mkdir -p "$root/DEBIAN"

install -d "$root/usr/bin" "$root/usr/lib/shoal/cpu" "$root/lib/systemd/system" \
    "$root/etc/shoal" "$root/usr/share/doc/shoal"
for p in "${programs[@]}"; do
    install -m 0755 -s "$cpu_bin/$p" "$root/usr/lib/shoal/cpu/$p"
    install -m 0755 "$here/launcher" "$root/usr/bin/$p"
    if [[ -n $cuda_bin ]]; then
        install -d "$root/usr/lib/shoal/cuda"
        install -m 0755 -s "$cuda_bin/$p" "$root/usr/lib/shoal/cuda/$p"
    fi
done
install -m 0755 "$here/shoal-wait-ready" "$root/usr/lib/shoal/shoal-wait-ready"
install -m 0644 "$here/shoal-coordinator.service" "$here/shoal-shard@.service" \
    "$root/lib/systemd/system/"
install -m 0644 "$here/coordinator.conf" "$here/shard-0.conf" "$root/etc/shoal/"
install -m 0644 "$here/copyright" "$root/usr/share/doc/shoal/copyright"
install -m 0644 "$here/../../README.md" "$root/usr/share/doc/shoal/README"
{
    echo "shoal ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the shoal source tree by make deb."
    echo
    echo " -- $maintainer  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")"
} | gzip -9n > "$root/usr/share/doc/shoal/changelog.gz"

install -m 0644 "$here/conffiles" "$root/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
recommends=
if [[ -n $cuda_bin ]]; then
    # The libraries the CUDA build loads, by NVIDIA's package names (its CUDA
    # repository); without them the launcher runs the CPU build.
    major=$(ldd "$cuda_bin/shoal-shard" | sed -n 's/.*libcudart\.so\.\([0-9]*\) .*/\1/p' | head -n 1)
    recommends="cuda-cudart-${major:-12}-0, libcublas-${major:-12}-0, libnccl2"
fi
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" -e "s/@RECOMMENDS@/$recommends/" \
    -e "s|@MAINTAINER@|$maintainer|" \
    "$here/control.in" > "$root/DEBIAN/control"
[[ -n $recommends ]] || sed -i '/^Recommends: $/d' "$root/DEBIAN/control"
(cd "$root" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$root" "$pkg" >&2
rm -rf "$root"
echo "$pkg"
