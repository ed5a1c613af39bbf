#!/usr/bin/env bash
# Make a Docker engine reachable: install Debian's docker.io when missing, start dockerd when `docker info` fails.
# The bridge stays off (--bridge=none): containers run with network_mode=none and builds need no network.
set -euo pipefail
if ! command -v dockerd >/dev/null 2>&1; then
  echo "setup: installing docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if docker info >/dev/null 2>&1; then exit 0; fi
echo "setup: starting dockerd"
mkdir -p /var/log
setsid dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/runner-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 1
done
echo "setup: dockerd did not come up; see /var/log/runner-dockerd.log" >&2
tail -20 /var/log/runner-dockerd.log >&2 || true
exit 1
