#!/usr/bin/env bash
# Docker's engine and kind on a Debian machine without systemd or a container registry.
#
# Usage: e2e/kind/engine.sh [up | down | status | --help]
#
#   up      (the default) install Debian's docker.io package when dockerd is missing, start
#           dockerd as a background process when none runs, build kind from its Go module
#           when the cache lacks it, and print the directory holding kind on stdout
#           (progress goes to stderr). Needs root.
#   down    stop the dockerd this script started (its pid file), and the containerd it runs.
#           A dockerd started otherwise is left alone.
#   status  say whether dockerd answers, who started it, and where kind is.
#
# dockerd runs with the cgroupfs cgroup driver (no systemd), the overlay2 storage driver,
# --iptables=false (the host's tables are not touched: kind's nodes need no masquerading
# here, and the host reaches the API server through docker-proxy on 127.0.0.1), its log in
# $DRA_DRIVER_CACHE/kind/dockerd.log, and Docker's default places (/var/lib/docker,
# /var/run/docker.sock), so the docker command works without options.
#
# Where the capability bounding set lacks capabilities (CapBnd in /proc/self/status, e.g.
# CAP_SYS_RESOURCE on some virtual machines), every privileged container fails with "unable
# to apply caps: operation not permitted", and kind's nodes are privileged. There dockerd
# gets runc-capfilter (e2e/kind/capfilter, built with Go) as its default runtime: it removes
# the missing capabilities from each container's configuration and runs runc. Where the set
# is complete, dockerd runs runc as usual.
#
# Environment:
#   KIND_VERSION      sigs.k8s.io/kind module version; default v0.33.0.
#   DRA_DRIVER_CACHE  cache root; default $HOME/.cache/dra-driver. kind goes to
#                     kind/kind-<KIND_VERSION>/kind, runc-capfilter to kind/bin/.
#   GOCACHE, GOMODCACHE, GOPROXY  as for the go command.
#
# Exit status: 0 on success, 1 when a step fails, 2 on a usage error.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly ROOT
readonly KIND_VERSION="${KIND_VERSION:-v0.33.0}"
readonly CACHE="${DRA_DRIVER_CACHE:-${HOME}/.cache/dra-driver}/kind"
readonly KIND_DIR="${CACHE}/kind-${KIND_VERSION}"
readonly KIND_BIN="${KIND_DIR}/kind"
readonly CAPFILTER_SRC="${ROOT}/e2e/kind/capfilter"
readonly CAPFILTER="${CACHE}/bin/runc-capfilter"
readonly DOCKERD_LOG="${CACHE}/dockerd.log"
readonly DOCKERD_PID="${CACHE}/dockerd.pid"
readonly DOCKER_SOCK="/var/run/docker.sock"
readonly DOCKERD="/usr/sbin/dockerd"
# The Debian package's own client; /usr/local/bin may hold another one.
readonly DOCKER="/usr/bin/docker"

log() { printf '[kind-engine %5ss] %s\n' "${SECONDS}" "$*" >&2; }
die() {
  printf 'e2e/kind/engine.sh: error: %s\n' "$*" >&2
  exit 1
}

action="${1:-up}"
case "${action}" in
  up | down | status) ;;
  -h | --help)
    sed -n '2,/^set -Eeuo pipefail$/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    printf 'e2e/kind/engine.sh: unknown argument %s\nusage: e2e/kind/engine.sh [up | down | status | --help]\n' "${action}" >&2
    exit 2
    ;;
esac

docker_answers() { "${DOCKER}" -H "unix://${DOCKER_SOCK}" info >/dev/null 2>&1; }

# The capability names the bounding set lacks, one a line (empty where it is complete).
missing_capabilities() {
  local bounding last
  bounding=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  last="$(cat /proc/sys/kernel/cap_last_cap)"
  local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
    CHECKPOINT_RESTORE)
  local bit
  for ((bit = 0; bit <= last; bit++)); do
    if ! (((bounding >> bit) & 1)); then
      printf 'CAP_%s\n' "${names[bit]:-${bit}}"
    fi
  done
}

build_capfilter() {
  if [[ -x "${CAPFILTER}" && "${CAPFILTER}" -nt "${CAPFILTER_SRC}/main.go" ]]; then
    return
  fi
  command -v go >/dev/null || die "go is not on PATH: it builds ${CAPFILTER_SRC}"
  log "building runc-capfilter from ${CAPFILTER_SRC#"${ROOT}"/}"
  mkdir -p "$(dirname "${CAPFILTER}")"
  (cd "${CAPFILTER_SRC}" && CGO_ENABLED=0 nice -n 10 go build -trimpath -o "${CAPFILTER}.tmp" .)
  mv -f "${CAPFILTER}.tmp" "${CAPFILTER}"
}

install_docker() {
  if [[ -x "${DOCKERD}" && -x "${DOCKER}" ]]; then
    return
  fi
  command -v apt-get >/dev/null || die "${DOCKERD} is missing and there is no apt-get to install docker.io"
  log "installing Debian's docker.io (dockerd, containerd, runc, tini)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >&2; then
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >&2
  fi
}

start_dockerd() {
  if docker_answers; then
    log "dockerd answers on ${DOCKER_SOCK}; using it as it is"
    return
  fi
  local args=(--exec-opt native.cgroupdriver=cgroupfs --storage-driver overlay2
    --iptables=false --ip6tables=false -H "unix://${DOCKER_SOCK}")
  local missing
  missing="$(missing_capabilities | tr '\n' ' ')"
  if [[ -n "${missing}" ]]; then
    build_capfilter
    log "the capability bounding set lacks ${missing% }: runc-capfilter is dockerd's default runtime"
    args+=(--add-runtime "capfilter=${CAPFILTER}" --default-runtime capfilter)
  fi
  mkdir -p "${CACHE}"
  log "starting ${DOCKERD} (log: ${DOCKERD_LOG})"
  # Its own session, so that it outlives this script; containerd is its child.
  setsid "${DOCKERD}" "${args[@]}" >>"${DOCKERD_LOG}" 2>&1 </dev/null &
  echo "$!" >"${DOCKERD_PID}"
  local deadline=$((SECONDS + 60))
  until docker_answers; do
    if ! kill -0 "$(cat "${DOCKERD_PID}")" 2>/dev/null; then
      tail -n 20 "${DOCKERD_LOG}" >&2
      die "dockerd exited; its log: ${DOCKERD_LOG}"
    fi
    ((SECONDS < deadline)) || die "dockerd does not answer after 60 s; its log: ${DOCKERD_LOG}"
    sleep 1
  done
  log "dockerd $("${DOCKER}" version --format '{{.Server.Version}}') answers (pid $(cat "${DOCKERD_PID}"))"
}

build_kind() {
  if [[ -x "${KIND_BIN}" ]] && "${KIND_BIN}" version 2>/dev/null | grep -q "^kind ${KIND_VERSION} "; then
    return
  fi
  command -v go >/dev/null || die "go is not on PATH: it builds kind from sigs.k8s.io/kind@${KIND_VERSION}"
  log "building kind from sigs.k8s.io/kind@${KIND_VERSION}"
  mkdir -p "${KIND_DIR}"
  local tmp
  tmp="$(mktemp -d "${KIND_DIR}/build.XXXXXX")"
  (cd "${tmp}" && GOBIN="${tmp}" CGO_ENABLED=0 nice -n 10 go install -trimpath "sigs.k8s.io/kind@${KIND_VERSION}")
  "${tmp}/kind" version >&2
  mv -f "${tmp}/kind" "${KIND_BIN}"
  rmdir "${tmp}"
}

stop_dockerd() {
  local pid
  pid="$(cat "${DOCKERD_PID}" 2>/dev/null || true)"
  if [[ -z "${pid}" ]] || ! kill -0 "${pid}" 2>/dev/null; then
    log "no dockerd started by this script runs"
    rm -f "${DOCKERD_PID}"
    return
  fi
  [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == "dockerd" ]] || die "pid ${pid} (from ${DOCKERD_PID}) is not dockerd"
  log "stopping dockerd (pid ${pid}); it stops its containers and its containerd"
  kill -TERM "${pid}"
  local deadline=$((SECONDS + 60))
  while kill -0 "${pid}" 2>/dev/null; do
    ((SECONDS < deadline)) || die "dockerd (pid ${pid}) still runs after 60 s"
    sleep 1
  done
  rm -f "${DOCKERD_PID}"
  log "dockerd stopped"
}

case "${action}" in
  up)
    [[ "$(id -u)" == 0 ]] || die "needs root (it installs packages and starts dockerd)"
    install_docker
    start_dockerd
    build_kind
    printf '%s\n' "${KIND_DIR}"
    ;;
  down)
    stop_dockerd
    ;;
  status)
    if docker_answers; then
      pid="$(cat "${DOCKERD_PID}" 2>/dev/null || true)"
      if [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null; then
        echo "dockerd: answers; started by this script (pid ${pid}, log ${DOCKERD_LOG})"
      else
        echo "dockerd: answers; not started by this script"
      fi
    else
      echo "dockerd: not answering on ${DOCKER_SOCK}"
    fi
    echo "missing capabilities: $(missing_capabilities | tr '\n' ' ')"
    echo "kind: ${KIND_BIN} $([[ -x "${KIND_BIN}" ]] && echo present || echo 'not built')"
    ;;
esac
