#!/usr/bin/env bash
# Rootless Podman for `engine=podman` and the `podman` tests. Idempotent, needs root:
#   scripts/ensure-podman.sh [USER] [PYTHON]
# installs podman (with uidmap, slirp4netns, fuse-overlayfs, acl) when missing, makes the unprivileged
# test user (default runner-ci; `useradd -m` fills /etc/subuid and /etc/subgid), its runtime dir
# (XDG_RUNTIME_DIR=/run/user/UID) and its image store (native overlay: fuse-overlayfs needs /dev/fuse,
# which may be root's only, and podman would fall back to vfs, a full copy of the image per container),
# lets the user run PYTHON (the project's venv interpreter: each directory on its real path that the
# user cannot enter gets an ACL entry for that user alone, e.g. /root for a pyenv Python), and checks
# that the user's podman answers, and lets it use the local registry on 127.0.0.1:5000 without TLS,
# as Docker does. It starts no service: the runner starts the user's
# `podman --runtime runc system service` when no socket answers, and stops what it started.
set -euo pipefail
USER_NAME=${1:-runner-ci}
PYTHON=${2:-}

if ! command -v podman >/dev/null 2>&1 || ! command -v newuidmap >/dev/null 2>&1 \
  || ! command -v slirp4netns >/dev/null 2>&1 || ! command -v fuse-overlayfs >/dev/null 2>&1 \
  || ! command -v setfacl >/dev/null 2>&1; then
  echo "setup: installing podman uidmap slirp4netns fuse-overlayfs acl"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    podman uidmap slirp4netns fuse-overlayfs acl >/dev/null
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

home=$(getent passwd "$USER_NAME" | cut -d: -f6)
as_user() { runuser -u "$USER_NAME" -- env -C / HOME="$home" XDG_RUNTIME_DIR="$runtime" "$@"; }
conf=$home/.config/containers/storage.conf
if [ ! -f "$conf" ]; then
  as_user mkdir -p "$(dirname "$conf")"
  printf '# scripts/ensure-podman.sh: native overlay (kernel >= 5.13), not vfs\n[storage]\ndriver = "overlay"\n' \
    | as_user tee "$conf" >/dev/null
  as_user podman system reset --force >/dev/null 2>&1 || true  # a store made before: its driver was another
fi

# Docker takes a registry on 127.0.0.1 without TLS (make registry starts one); Podman, told so
regs=$home/.config/containers/registries.conf.d/50-runner-local.conf
if [ ! -f "$regs" ]; then
  as_user mkdir -p "$(dirname "$regs")"
  printf '# scripts/ensure-podman.sh: the local registry (make registry) answers plain HTTP, as Docker allows\n[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n' \
    | as_user tee "$regs" >/dev/null
fi

if [ -n "$PYTHON" ]; then
  dir=$(dirname "$(readlink -f "$PYTHON")")
  while [ "$dir" != / ]; do
    if ! runuser -u "$USER_NAME" -- test -x "$dir"; then
      echo "setup: letting $USER_NAME enter $dir (ACL, search only)"
      setfacl -m "u:$USER_NAME:x" "$dir"
    fi
    dir=$(dirname "$dir")
  done
  as_user "$PYTHON" -c 'import runner' >/dev/null
fi

# crun fails on hybrid cgroups ("cgroups in hybrid mode not supported"): runc it is
if ! as_user podman --runtime runc info >/dev/null 2>&1; then
  echo "setup: rootless podman does not answer for $USER_NAME" >&2
  as_user podman --runtime runc info 2>&1 | tail -5 >&2
  exit 1
fi
