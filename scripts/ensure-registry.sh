#!/usr/bin/env bash
# A real image registry on this machine, for `image.registry=127.0.0.1:5000/…` and the registry tests;
# also the tools `runner export` uses (skopeo for OCI archives, mksquashfs for enroot's squashfs).
# Idempotent: installs Debian's docker-registry, skopeo and squashfs-tools when missing, writes the
# registry's config, starts it when nothing answers on its address, and waits until it does.
# It stops nothing: a registry already running is left as it is. Needs root.
set -euo pipefail
ADDR="${RUNNER_REGISTRY_ADDR:-127.0.0.1:5000}"
CONF=/etc/runner/registry.yml
STORE=/var/lib/runner-registry
LOG=/var/log/runner-registry.log

answers() {  # a Docker registry (API v2) answers on $ADDR
  curl -fsS -m 2 -D - -o /dev/null "http://$ADDR/v2/" 2>/dev/null | grep -qi '^docker-distribution-api-version: registry/2'
}

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v mksquashfs >/dev/null 2>&1 || missing+=(squashfs-tools)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi

want=$(cat <<YML
# Written by scripts/ensure-registry.sh: an image registry on loopback only, no TLS (Docker trusts 127.0.0.0/8).
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STORE
http:
  addr: $ADDR
YML
)
mkdir -p "$(dirname "$CONF")" "$STORE"
if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then printf '%s\n' "$want" >"$CONF"; fi

if answers; then exit 0; fi
echo "setup: starting docker-registry on $ADDR (storage $STORE)"
setsid -f docker-registry serve "$CONF" >>"$LOG" 2>&1 </dev/null
for _ in $(seq 1 60); do
  if answers; then exit 0; fi
  sleep 0.5
done
echo "setup: the registry did not answer on $ADDR; see $LOG" >&2
tail -5 "$LOG" >&2 || true
exit 1
