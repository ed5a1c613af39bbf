#!/usr/bin/env bash
# Rootless Podman for `engine=podman` and the `podman` tests. Idempotent, needs root:
# installs podman (with uidmap, slirp4netns, fuse-overlayfs) when missing, makes the unprivileged
# test user (default runner-ci; `useradd -m` fills /etc/subuid and /etc/subgid) and its runtime
# dir (XDG_RUNTIME_DIR=/run/user/UID), and checks that the user's podman answers. It starts no
# service: the runner starts the user's `podman --runtime runc system service` when no socket answers,
# and stops what it started.
set -euo pipefail
USER_NAME=${1:-runner-ci}

if ! command -v podman >/dev/null 2>&1 || ! command -v newuidmap >/dev/null 2>&1 \
  || ! command -v slirp4netns >/dev/null 2>&1 || ! command -v fuse-overlayfs >/dev/null 2>&1; then
  echo "setup: installing podman uidmap slirp4netns fuse-overlayfs"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    podman uidmap slirp4netns fuse-overlayfs >/dev/null
fi

if ! id -u "$USER_NAME" >/dev/null 2>&1; then
  echo "setup: adding user $USER_NAME"
  useradd -m -s /bin/bash "$USER_NAME"
fi
uid=$(id -u "$USER_NAME")
# rootless podman needs subordinate ids; useradd -m adds them, an older user may lack them
grep -q "^$USER_NAME:" /etc/subuid || usermod --add-subuids 200000-265535 "$USER_NAME"
grep -q "^$USER_NAME:" /etc/subgid || usermod --add-subgids 200000-265535 "$USER_NAME"

runtime=/run/user/$uid
if [ ! -d "$runtime" ]; then
  mkdir -p "$runtime"
  chown "$USER_NAME:" "$runtime"
  chmod 700 "$runtime"
fi

# crun fails on hybrid cgroups ("cgroups in hybrid mode not supported"): runc it is
if ! runuser -u "$USER_NAME" -- env -C / HOME="$(getent passwd "$USER_NAME" | cut -d: -f6)" \
  XDG_RUNTIME_DIR="$runtime" podman --runtime runc info >/dev/null 2>&1; then
  echo "setup: rootless podman does not answer for $USER_NAME" >&2
  runuser -u "$USER_NAME" -- env -C / XDG_RUNTIME_DIR="$runtime" podman --runtime runc info 2>&1 | tail -5 >&2
  exit 1
fi
