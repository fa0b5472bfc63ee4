#!/usr/bin/env bash
# Runs a command in an unpacked image's root file system the way the Deployment runs the agent,
# with no container engine (none works here): its own mount and PID namespaces, the root
# read-only, an empty tmpfs on /tmp, /proc, as UID:GID with only the NAME=VALUE variables given.
# --tmp PATH first copies PATH (a file in the image) to /tmp. As root; for tests/integration/image_spec.lua.
# usage: image/run.sh ROOTFS UID:GID [--tmp PATH]... [NAME=VALUE]... COMMAND [ARGS]...
set -euo pipefail
if [ "${1:-}" != --in-namespaces ]; then exec unshare --mount --pid --fork "$0" --in-namespaces "$@"; fi
root=$(realpath "$2")
user=$3
shift 3
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"
mount -t proc proc "$root/proc"
while [ "${1:-}" = --tmp ]; do
  cp "$root$2" "$root/tmp/" && chown "$user" "$root/tmp/${2##*/}"
  shift 2
done
env=()
while [[ ${1:-} =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do env+=("$1"); shift; done
exec env -i "${env[@]}" "$(command -v chroot)" --userspec="$user" "$root" "$@"
