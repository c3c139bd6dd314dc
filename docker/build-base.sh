#!/usr/bin/env bash
# Builds the image's local base, offline from any image registry: Debian bookworm (minbase) with
# its python3, from the Debian mirror this machine's apt already uses, imported with `docker import`.
# Usage: docker/build-base.sh IMAGE_NAME CACHE_DIR
# Idempotent: nothing happens if IMAGE_NAME exists; the root filesystem tarball is cached in
# CACHE_DIR, so a second build (or a docker daemon reset) does not debootstrap again.
set -euo pipefail

image=${1:?usage: build-base.sh IMAGE_NAME CACHE_DIR}
cache=${2:?usage: build-base.sh IMAGE_NAME CACHE_DIR}
suite=bookworm
tarball="$cache/$suite-python3-rootfs.tar"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image present"
  exit 0
fi

# The first Debian mirror in apt's sources (deb822 or one-line), unless DEBIAN_MIRROR is set.
mirror_from_apt() {
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}'
  cat /etc/apt/sources.list 2>/dev/null \
    | awk '/^deb / {for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}'
  true
}

if [ ! -s "$tarball" ]; then
  mirror=${DEBIAN_MIRROR:-$(mirror_from_apt | head -n1 || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/cni-pipeline-base.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap $suite from $mirror (about a minute)"
  debootstrap --variant=minbase --include=python3,ca-certificates "$suite" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # What a runtime never reads: package indexes and caches, docs, man pages, translations.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian
  # mktemp made the directory 0700: as the image's / that would lock out every non-root user.
  chmod 0755 "$rootfs"
  mkdir -p "$cache"
  # Sorted, numeric owners: the same packages give the same tarball layout.
  tar -C "$rootfs" --sort=name --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

docker import --message "debootstrap --variant=minbase $suite + python3" "$tarball" "$image" >/dev/null
echo "base image $image imported from $tarball"
