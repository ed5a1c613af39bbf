#!/usr/bin/env bash
# Make the base image the images build FROM. Users with a registry pull a base pinned by digest;
# where no registry answers (as here), debootstrap Debian bookworm with python3 and `docker import` it.
# The image id of the result is what manifests record and what image tags hash.
set -euo pipefail
NAME="${1:-runner-base:bookworm}"
if docker image inspect "$NAME" >/dev/null 2>&1; then exit 0; fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
dir=$(mktemp -d /tmp/runner-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "setup: debootstrap bookworm into $dir (about 40 s)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$dir/root" http://deb.debian.org/debian >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
rm -rf "$dir/root/var/cache/apt/archives/"*.deb "$dir/root/var/lib/apt/lists/"*
tar -C "$dir/root" -c . | docker import - "$NAME" >/dev/null
rm -f "$dir.log"
echo "setup: base image $NAME is $(docker image inspect -f '{{.Id}}' "$NAME")"
