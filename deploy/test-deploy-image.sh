#!/usr/bin/env bash
# test-deploy-image.sh - the root file system the deploy test boots its hosts from.
#
#   test-deploy-image.sh [CACHE_DIR]    prints the image's directory on stdout
#
# A Debian 12 minbase root with systemd, sshd, python3 (and python3-apt, which
# ansible's apt module needs) and the runtime libraries shoal's package depends
# on. Booted hosts have no route out, so everything the roles install must be in
# the image already, except the .deb that the playbook copies over.
#
# The image is made once by debootstrap (about 2 minutes, 310 MB) and cached in
# CACHE_DIR (default /var/cache/shoal-test) under a name keyed by a hash of what
# goes into it: the suite, the mirror, the package list and this script. A
# change to any of them makes a new image; old ones are left for the operator
# to remove. A half-made image is never used: it is built in a temporary
# directory and renamed into place when complete.
set -euo pipefail

cache=${1:-${SHOAL_TEST_CACHE:-/var/cache/shoal-test}}
suite=bookworm
mirror=${SHOAL_TEST_MIRROR:-http://deb.debian.org/debian}
packages=(
    systemd systemd-sysv dbus iproute2 openssh-server python3 python3-apt sudo
    procps ca-certificates
    libzmq5 libczmq4 libmsgpackc2 librocksdb7.8 libopenblas0 libmicrohttpd12
)

key=$( { echo "$suite $mirror"; printf '%s\n' "${packages[@]}"; cat "$0"; } |
       sha256sum | cut -c1-16)
image=$cache/image-$suite-$key

if [[ -f $image/.shoal-image-complete ]]; then
    echo "image: cached $image" >&2
    echo "$image"
    exit 0
fi

command -v debootstrap >/dev/null || {
    echo "image: debootstrap is missing (make deploy-deps)" >&2
    exit 1
}
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "image: debootstrap $suite into $tmp (cache miss, key $key)" >&2
include=$(IFS=,; echo "${packages[*]}")
debootstrap --variant=minbase --include="$include" "$suite" "$tmp/root" "$mirror" \
    > "$tmp/debootstrap.log" 2>&1 || {
    tail -n 30 "$tmp/debootstrap.log" >&2
    exit 1
}

root=$tmp/root
# Keys are installed per run by the test; root logs in with a key only.
mkdir -p "$root/root/.ssh"
chmod 700 "$root/root/.ssh"
# No console login and no network configuration: the test sets addresses from
# outside, in the host's network namespace, before it boots.
rm -f "$root/etc/machine-id"
: > "$root/etc/machine-id"
# Smaller and quicker boots: units that have nothing to do in a test host.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
            systemd-timesyncd.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
rm -rf "$root"/var/cache/apt/archives/*.deb
echo "$key" > "$root/.shoal-image-complete"
mv "$root" "$image.tmp.$$"
mv -T "$image.tmp.$$" "$image"
echo "image: made $image" >&2
echo "$image"
