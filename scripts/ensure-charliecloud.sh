#!/usr/bin/env bash
# Charliecloud for `engine=charliecloud` and the `charliecloud` tests. Idempotent, needs root:
# installs charliecloud (ch-run, ch-convert), squashfs-tools, skopeo and umoci (an image file made
# by `docker save` or as an OCI layout is unpacked by them, unprivileged) when missing, makes the
# unprivileged test user (default runner-ci, the one scripts/ensure-podman.sh makes too), checks
# that the user can start an unprivileged container (a user namespace) with ch-run, and lets the
# user reach the checkout and its interpreter.  Usage: ensure-charliecloud.sh [USER [PYTHON [CHECKOUT]]]
set -euo pipefail
USER_NAME=${1:-runner-ci}

if ! command -v ch-run >/dev/null 2>&1 || ! command -v ch-convert >/dev/null 2>&1 \
  || ! command -v unsquashfs >/dev/null 2>&1 || ! command -v skopeo >/dev/null 2>&1 \
  || ! command -v umoci >/dev/null 2>&1; then
  echo "setup: installing charliecloud squashfs-tools skopeo umoci"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    charliecloud squashfs-tools skopeo umoci >/dev/null
fi

if ! id -u "$USER_NAME" >/dev/null 2>&1; then
  echo "setup: adding user $USER_NAME"
  useradd -m -s /bin/bash "$USER_NAME"
fi

# ch-run needs unprivileged user namespaces (and $USER): ch-checkns makes one and mounts in it
if ! runuser -u "$USER_NAME" -- env -i USER="$USER_NAME" PATH=/usr/bin:/bin ch-checkns >/dev/null 2>&1; then
  echo "setup: ch-run cannot start an unprivileged container for $USER_NAME" >&2
  runuser -u "$USER_NAME" -- env -i USER="$USER_NAME" PATH=/usr/bin:/bin ch-checkns 2>&1 | tail -3 >&2
  exit 1
fi

# The tests run the runner as that user, from this checkout and with its interpreter: the user must
# reach both (pyenv keeps the interpreter under /root, which others may not enter). Directories on
# the way that others cannot pass get o+x: passing, not listing.
reach() {
  local dir=$1
  while [ "$dir" != / ]; do
    case $(stat -c %A "$dir") in *x | *t) ;; *) echo "setup: o+x on $dir"; chmod o+x "$dir" ;; esac
    dir=$(dirname "$dir")
  done
}
PY=${2:-}
CHECKOUT=${3:-}
if [ -n "$CHECKOUT" ] && ! runuser -u "$USER_NAME" -- test -r "$CHECKOUT/pyproject.toml"; then
  reach "$(readlink -f "$CHECKOUT")"
fi
if [ -n "$PY" ] && ! runuser -u "$USER_NAME" -- "$PY" -c '' >/dev/null 2>&1; then
  reach "$(dirname "$(readlink -f "$PY")")"
  runuser -u "$USER_NAME" -- "$PY" -c '' || { echo "setup: $USER_NAME cannot run $PY" >&2; exit 1; }
fi
