#!/usr/bin/env bash
# Build, or reuse from the cache, the helm binary the deploy tests and users of this tree run.
#
# Usage: e2e/tools/helm.sh [--print-path | --help]
#
#   (no option)    build helm if the cache lacks it, check that it runs, print its path on stdout
#                  (progress goes to stderr).
#   --print-path   print where the binary is or would be; build nothing, no network.
#
# helm is compiled from its pinned Go module (helm.sh/helm/v3 at HELM_VERSION) through the Go
# module proxy, the same way e2e/cluster/build.sh builds the Kubernetes components: no release
# archive is downloaded. A cold build takes a few minutes of CPU; it runs at the lowest priority.
#
# Environment:
#   HELM_VERSION      helm.sh/helm/v3 module version; default below.
#   DRA_DRIVER_CACHE  cache root; default $HOME/.cache/dra-driver. The binary goes to
#                     $DRA_DRIVER_CACHE/tools/helm-<HELM_VERSION>/helm.
#   GOCACHE, GOMODCACHE, GOPROXY  as for the go command.
#
# Contract: the binary is built into a temporary directory and renamed into place only after it
# runs, so an interrupted build is redone, never half-reused. Exit status: 0 on success, 1 when
# the build fails, 2 on a usage error.
set -Eeuo pipefail

readonly HELM_VERSION="${HELM_VERSION:-v3.22.0}"
readonly CACHE_ROOT="${DRA_DRIVER_CACHE:-${HOME}/.cache/dra-driver}"
readonly HELM_DIR="${CACHE_ROOT}/tools/helm-${HELM_VERSION}"
readonly HELM_BIN="${HELM_DIR}/helm"

log() { printf '[helm-build %5ss] %s\n' "${SECONDS}" "$*" >&2; }
die() {
  printf 'e2e/tools/helm.sh: error: %s\n' "$*" >&2
  exit 1
}

case "${1:-}" in
  "") ;;
  --print-path)
    printf '%s\n' "${HELM_BIN}"
    exit 0
    ;;
  -h | --help)
    sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    printf 'e2e/tools/helm.sh: unknown option %s\nusage: e2e/tools/helm.sh [--print-path | --help]\n' "$1" >&2
    exit 2
    ;;
esac

# Bump when the way the binary is produced changes, so that an old one is rebuilt.
readonly RECIPE="helm ${HELM_VERSION} recipe 2"
readonly STAMP="${HELM_DIR}/recipe"

if [[ -x "${HELM_BIN}" && "$(cat "${STAMP}" 2>/dev/null)" == "${RECIPE}" ]] &&
  "${HELM_BIN}" version --short >/dev/null 2>&1; then
  log "reusing ${HELM_BIN}"
  printf '%s\n' "${HELM_BIN}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "the go command is needed to build helm ${HELM_VERSION}; install Go 1.24 or newer"

mkdir -p "${CACHE_ROOT}/tools"
staging="$(mktemp -d "${CACHE_ROOT}/tools/.helm-${HELM_VERSION}.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT

log "building helm ${HELM_VERSION} from its Go module"
# helm's Makefile stamps the version, and the Kubernetes version `helm template` and `helm lint`
# assume (1.<client-go minor>); without the latter they assume 1.20 and refuse charts that
# need a newer cluster. The client-go version is read from helm's own go.mod.
gomod="$(GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')" ||
  die "go mod download helm.sh/helm/v3@${HELM_VERSION} failed (is the Go module proxy reachable?)"
client_go="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "${gomod}" | head -n 1)"
[[ -n "${client_go}" ]] || die "no k8s.io/client-go requirement in ${gomod}"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${client_go}"
done
# -mod=mod: `go install pkg@version` resolves the module's own go.mod, never this tree's.
GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="${staging}" nice -n 19 \
  go install -trimpath -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" ||
  die "go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION} failed (is the Go module proxy reachable?)"

"${staging}/helm" version --short >/dev/null || die "the helm binary built for ${HELM_VERSION} does not run"
mkdir -p "${HELM_DIR}"
mv -f "${staging}/helm" "${HELM_BIN}"
printf '%s\n' "${RECIPE}" >"${STAMP}"
log "built ${HELM_BIN} ($("${HELM_BIN}" version --short))"
printf '%s\n' "${HELM_BIN}"
