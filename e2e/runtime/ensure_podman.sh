#!/usr/bin/env bash
# Make podman usable for the CDI runtime tests, and build a busybox root filesystem without
# any image registry.
#
# Usage: e2e/runtime/ensure_podman.sh [--help]
#
#   1. podman and runc: used as found; when missing, installed with
#      `apt-get install -y --no-install-recommends podman runc` (Debian 12 gives podman 4.3.1
#      with conmon and crun, and runc 1.1.5). Needs root and apt-get. runc, because crun 1.8
#      refuses to run on a host with hybrid cgroups ("cgroups in hybrid mode not supported"),
#      as this kind of VM has. Recommends are left out: the tests run containers with
#      --network none and need no buildah, slirp4netns or fuse-overlayfs.
#   2. A root filesystem tarball of busybox, made from Debian's busybox-static .deb
#      (`apt-get download`, `dpkg-deb -x`): /bin/busybox, a symlink per applet, an /etc/passwd
#      with root. `podman import` turns it into an image; nothing is pulled from a registry.
#
# Output: the tarball's path on stdout (the only line there); progress on stderr.
#
# Environment:
#   DRA_DRIVER_CACHE  cache root; default $HOME/.cache/dra-driver. The tarball and the .deb's
#                     version live in $DRA_DRIVER_CACHE/runtime/.
#
# Contract: a run that finds podman installed and the tarball cached touches no network and
# writes nothing. The tarball is written to a temporary name and renamed, so an interrupted
# run leaves no half-built file; concurrent runs on one cache are serialised by a lock.
# The Debian version is whatever the host's apt serves on the first run; it stays fixed in
# the cache (busybox-rootfs.version) until the file is removed.
# Exit status: 0 ready; 3 podman is missing and cannot be installed here (not root, or no
# apt-get), which the tests turn into a skip; 1 any other failure; 2 usage error.
set -Eeuo pipefail
on_error() {
  local rc=$?
  printf 'e2e/runtime/ensure_podman.sh: error: line %s: "%s" exited with status %s\n' \
    "${BASH_LINENO[0]}" "${BASH_COMMAND}" "${rc}" >&2
}
trap on_error ERR

readonly CACHE_DIR="${DRA_DRIVER_CACHE:-${HOME}/.cache/dra-driver}/runtime"
readonly ROOTFS_TAR="${CACHE_DIR}/busybox-rootfs.tar"
readonly ROOTFS_VERSION="${CACHE_DIR}/busybox-rootfs.version"
readonly EXIT_CANNOT_INSTALL=3

log() { printf '[ensure-podman %4ss] %s\n' "${SECONDS}" "$*" >&2; }
die() {
  printf 'e2e/runtime/ensure_podman.sh: error: %s\n' "$*" >&2
  exit 1
}

case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    printf 'e2e/runtime/ensure_podman.sh: unknown argument %s\nusage: e2e/runtime/ensure_podman.sh [--help]\n' "$1" >&2
    exit 2
    ;;
esac

# apt must never ask anything, and must wait for a concurrent dpkg instead of failing.
readonly APT_OPTIONS=(-y -q -o DPkg::Lock::Timeout=600 -o APT::Sandbox::User=root)
export DEBIAN_FRONTEND=noninteractive

can_use_apt() { [[ ${EUID} -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }

# Run an apt-get command; when it fails (package lists missing or stale on a fresh machine),
# refresh the lists once and try again.
apt_get() {
  if apt-get "${APT_OPTIONS[@]}" "$@" >&2; then
    return 0
  fi
  log "apt-get $* failed; refreshing the package lists and retrying"
  apt-get "${APT_OPTIONS[@]}" update >&2
  apt-get "${APT_OPTIONS[@]}" "$@" >&2
}

ensure_podman() {
  local missing=() command version
  for command in podman runc; do
    command -v "${command}" >/dev/null 2>&1 || missing+=("${command}")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    if ! can_use_apt; then
      printf 'e2e/runtime/ensure_podman.sh: not installed: %s; cannot install them here: %s\n' \
        "${missing[*]}" \
        "$([[ ${EUID} -eq 0 ]] && echo 'apt-get is not available' || echo 'installing needs root')" >&2
      exit "${EXIT_CANNOT_INSTALL}"
    fi
    log "missing: ${missing[*]}; apt-get install podman runc (no recommends)"
    apt_get install --no-install-recommends podman runc
  fi
  version="$(podman --version)" || die "podman is installed but does not run"
  log "using ${version} ($(command -v podman)), $(runc --version | head -n 1)"
}

build_rootfs() {
  if [[ -s "${ROOTFS_TAR}" ]]; then
    log "busybox rootfs cached: ${ROOTFS_TAR} (busybox-static $(cat "${ROOTFS_VERSION}" 2>/dev/null || echo '?'))"
    return 0
  fi
  can_use_apt || die "the busybox rootfs is not cached and apt-get cannot fetch busybox-static here (needs root and apt-get)"
  local work
  work="$(mktemp -d "${CACHE_DIR}/.build.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory.
  trap "rm -rf '${work}'" EXIT
  log "building the busybox rootfs from busybox-static"
  (cd "${work}" && apt_get download busybox-static)
  local deb
  deb="$(echo "${work}"/busybox-static_*.deb)"
  [[ -f "${deb}" ]] || die "apt-get download busybox-static produced no .deb in ${work}"
  dpkg-deb -x "${deb}" "${work}/deb"
  local rootfs="${work}/rootfs" applet
  mkdir -p "${rootfs}"/{bin,dev,etc,proc,root,sys,tmp}
  chmod 1777 "${rootfs}/tmp"
  install -m 0755 "${work}/deb/bin/busybox" "${rootfs}/bin/busybox"
  # The static binary runs on the host too; it lists its own applets.
  for applet in $("${rootfs}/bin/busybox" --list); do
    [[ "${applet}" == busybox || -e "${rootfs}/bin/${applet}" ]] || ln -s busybox "${rootfs}/bin/${applet}"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"${rootfs}/etc/passwd"
  printf 'root:x:0:\n' >"${rootfs}/etc/group"
  # Fixed owner, order and times: the same .deb always gives the same tarball.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -C "${rootfs}" -cf "${work}/rootfs.tar" .
  dpkg-deb -f "${deb}" Version >"${work}/version"
  mv "${work}/version" "${ROOTFS_VERSION}"
  mv "${work}/rootfs.tar" "${ROOTFS_TAR}"
  log "busybox rootfs built: ${ROOTFS_TAR} (busybox-static $(cat "${ROOTFS_VERSION}"), $(du -k "${ROOTFS_TAR}" | cut -f1) KiB)"
}

mkdir -p "${CACHE_DIR}"
exec 9>"${CACHE_DIR}/.lock"
flock 9
ensure_podman
build_rootfs
printf '%s\n' "${ROOTFS_TAR}"
