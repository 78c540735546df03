#!/usr/bin/env bash
# Builds shunt's image with no registry: a Debian base made from Debian's
# packages (debootstrap --variant=minbase, with iptables and nftables, which
# the capture step runs), shunt's static binary on top, imported with
# `podman import`. Users with a registry use deploy/image/Containerfile
# instead; both give the same layout.
#
#   deploy/image/build.sh [TAG]        (default localhost/shunt:dev; as root)
#
# The base is cached outside the repository, keyed by suite and packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-localhost/shunt:dev}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=iptables,nftables
cache=${SHUNT_IMAGE_CACHE:-/var/cache/shunt/image}
base=$cache/$suite-minbase-${packages//,/-}.tar

work=$(mktemp -d /tmp/shunt-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [[ ! -f $base ]]; then
	mkdir -p "$cache"
	debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" >&2
	# What an image does not need: package lists, caches, docs.
	rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/*.bin \
		"$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/*
	tar -C "$work/rootfs" -cf "$base.tmp" .
	mv "$base.tmp" "$base"
	rm -rf "$work/rootfs"
fi
mkdir -p "$work/add/usr/local/bin"
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$work/add/usr/local/bin/shunt" ./cmd/shunt
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$work/add/usr/local/bin/shunt-control" ./cmd/shunt-control
cp "$base" "$work/image.tar"
tar -C "$work/add" -rf "$work/image.tar" ./usr/local/bin/shunt ./usr/local/bin/shunt-control
podman import --change 'ENTRYPOINT ["/usr/local/bin/shunt"]' --change 'CMD ["--help"]' \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	"$work/image.tar" "$tag" >&2
echo "$tag"
