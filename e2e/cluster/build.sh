#!/usr/bin/env bash
# Build, or reuse from the cache, every binary the local test cluster runs:
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl
#       compiled from the pinned k8s.io/kubernetes Go module (e2e/cluster/go), in one
#       `go build` so that the packages they share compile once
#   etcd, etcdctl, etcdutl, containerd (1.7, CDI-capable), containerd-shim-runc-v2, ctr,
#   runc, the CNI plugins, busybox (static) and umoci
#       unpacked from Debian .debs
#
# Usage: e2e/cluster/build.sh [--smoke | --print-plan | --help]
#
#   (no option)   build or fetch what the cache lacks, check that every binary runs, and print
#                 the bin directory on stdout. Progress goes to stderr: a line per step and per
#                 binary with its elapsed time, while compiling a live line on a terminal
#                 (elsewhere a line every PROGRESS_EVERY_S seconds); "cache warm" when all is reused.
#   --smoke       the same, then start etcd and containerd briefly in a temporary directory
#                 (loopback ports and unix sockets only), talk to them, stop them, clean up.
#   --print-plan  print what would be built, fetched and reused; touch nothing (no network,
#                 no writes).
#
# Environment:
#   KUBE_VERSION      k8s.io/kubernetes version, vMAJOR.MINOR.PATCH[-PRE]; default: the one
#                     e2e/cluster/go/go.mod pins. Another version gets a generated module
#                     under the cache (needs the Go module proxy).
#   DRA_DRIVER_CACHE  cache root; default $HOME/.cache/dra-driver. Binaries go to
#                     $DRA_DRIVER_CACHE/k8s-<KUBE_VERSION>/bin, CNI plugins to .../cni/bin.
#   DEBIAN_MIRROR     Debian archive URI; default: the one this machine's apt sources use for
#                     its own release (read from $APT_ETC_DIR/sources.list*, APT_ETC_DIR
#                     defaulting to /etc/apt).
#   DEBIAN_SUITE      the newer Debian release the packages come from; default trixie.
#   PROGRESS_EVERY_S  seconds between progress lines while compiling when stderr is not a
#                     terminal (a terminal gets one live line instead); default 30.
#   GOCACHE, GOMODCACHE, GOPROXY  as for the go command.
#
# Contract: the cache is reused when its stamp matches the recipe (version, module sums,
# build flags, package list); a run that finds everything cached needs no network. When the
# Kubernetes stamp differs (a component added, go.mod changed), the one `go build` starts from
# the binaries already in the cache: Go relinks only a binary whose inputs changed and
# compiles only packages its build cache lacks, so adding a component to a warm cache costs
# that component's own packages, not a rebuild of the others. Each part
# is installed completely before its stamp is written, so an interrupted run is redone, never
# half-reused. Concurrent runs on one cache are serialised by a lock. Exit status: 0 on
# success, 1 when a step fails, 2 on a usage error.
set -Eeuo pipefail
# A failing command outside an explicit check still says where it failed.
on_error() {
  local rc=$?
  printf 'e2e/cluster/build.sh: error: line %s: "%s" exited with status %s\n' \
    "${BASH_LINENO[0]}" "${BASH_COMMAND}" "${rc}" >&2
}
trap on_error ERR

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly GO_MODULE_DIR="${SCRIPT_DIR}/go"
# Bump when the way the binaries are produced changes, so that old caches are rebuilt.
readonly RECIPE_REVISION=1

readonly KUBE_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# Upstream's release build uses these tags (hack/lib/golang.sh); none gates code the
# components need on Linux: notest drops fuzz helpers, grpcnotrace drops x/net/trace,
# selinux is a no-op for the current opencontainers/selinux. The kubelet needs no extra tag.
readonly GO_TAGS="selinux,notest,grpcnotrace"
# No package on the Linux build path of these four commands needs cgo, so the binaries are
# static and independent of the host's libc.
readonly GO_CGO_ENABLED=0

# Debian packages: NAME for the newer release (DEBIAN_SUITE), NAME@host for the release this
# machine runs. runc and skopeo in trixie are linked against glibc 2.38, newer than Debian
# 12's 2.36, so runc comes from the host's release; skopeo is not fetched at all: umoci builds
# an OCI layout that `ctr images import --base-name` loads directly.
readonly DEBIAN_SUITE="${DEBIAN_SUITE:-trixie}"
readonly DEB_PACKAGES=(
  etcd-server etcd-client containerd containernetworking-plugins busybox-static umoci
  runc@host
)
# Binaries copied from the unpacked packages into bin/ (CNI plugins go to cni/bin/).
readonly DEB_BINARIES=(etcd etcdctl etcdutl containerd containerd-shim-runc-v2 ctr runc busybox umoci)
readonly CNI_PLUGINS=(bridge host-local loopback portmap bandwidth firewall tuning ptp)

# On a terminal the compile step keeps one live line; a log line first clears it. Elsewhere
# (a pipe, a CI log) a progress line comes every PROGRESS_EVERY_S seconds instead.
STDERR_TTY=0
[[ -t 2 ]] && STDERR_TTY=1
PROGRESS_EVERY_S="${PROGRESS_EVERY_S:-30}"
log() {
  ((STDERR_TTY)) && printf '\r\033[K' >&2
  printf '[cluster-build %5ss] %s\n' "${SECONDS}" "$*" >&2
}
# 372 -> 6m12s
duration() {
  if (($1 >= 60)); then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi
}
die() {
  printf 'e2e/cluster/build.sh: error: %s\n' "$*" >&2
  exit 1
}
usage_error() {
  printf 'e2e/cluster/build.sh: %s\nusage: e2e/cluster/build.sh [--smoke | --print-plan | --help]\n' "$*" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# Plan: everything here is pure (no network, no writes).

pinned_kube_version() {
  awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "${GO_MODULE_DIR}/go.mod"
}

# v1.37.2 -> v0.37.2: the staging modules (k8s.io/api, ...) are tagged v0.MINOR.PATCH for
# Kubernetes v1.MINOR.PATCH.
staging_version() {
  printf 'v0.%s\n' "${1#v1.}"
}

host_codename() {
  # shellcheck disable=SC1091 # a system file, read at run time
  (. /etc/os-release && printf '%s\n' "${VERSION_CODENAME:-}")
}

# Print "URI<TAB>KEYRING" of the first enabled apt source (deb822 *.sources or one-line
# *.list under APT_ETC_DIR) that serves component main of the given suite; KEYRING is empty
# when the source names none. Fails when there is no such source.
discover_debian_mirror() {
  local codename="$1" file
  for file in "${APT_ETC_DIR}"/sources.list.d/*.sources; do
    [[ -f "${file}" ]] || continue
    awk -v want="${codename}" '
      function flush() {
        if (!found && enabled != "no" && (" " types " ") ~ / deb / \
            && (" " suites " ") ~ (" " want " ") && (" " comps " ") ~ / main / && uris != "") {
          split(uris, u, " "); print u[1] "\t" signed; found = 1
        }
        types = suites = comps = uris = signed = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[ \t]+/, ""); value = $0
        if (key == "types") types = value
        else if (key == "uris") uris = value
        else if (key == "suites") suites = value
        else if (key == "components") comps = value
        else if (key == "signed-by") signed = value
        else if (key == "enabled") enabled = tolower(value)
      }
      END { flush() }' "${file}" | head -n 1 | grep . && return 0
  done
  for file in "${APT_ETC_DIR}/sources.list" "${APT_ETC_DIR}"/sources.list.d/*.list; do
    [[ -f "${file}" ]] || continue
    awk -v want="${codename}" '
      $1 != "deb" { next }
      {
        signed = ""; i = 2
        if ($2 ~ /^\[/) {
          while (i <= NF) {
            if ($i ~ /^\[?signed-by=/) { signed = $i; sub(/^\[?signed-by=/, "", signed); sub(/\]$/, "", signed) }
            if ($i ~ /\]$/) { i++; break }
            i++
          }
        }
        uri = $i; suite = $(i + 1)
        for (j = i + 2; j <= NF; j++) if (suite == want && $j == "main") { print uri "\t" signed; exit }
      }' "${file}" | head -n 1 | grep . && return 0
  done
  return 1
}

# Everything that decides the content of the Kubernetes binaries.
kube_recipe() {
  local sums
  if [[ "${KUBE_VERSION}" == "${PINNED_KUBE_VERSION}" ]]; then
    sums="$(sha256sum "${GO_MODULE_DIR}/go.mod" "${GO_MODULE_DIR}/go.sum" | awk '{print $1}' | tr '\n' ' ')"
  else
    sums="generated-from-proxy"
  fi
  printf 'recipe=%s kube=%s staging=%s go=%s cgo=%s tags=%s components=%s modules=%s\n' \
    "${RECIPE_REVISION}" "${KUBE_VERSION}" "$(staging_version "${KUBE_VERSION}")" "${GO_MINOR}" \
    "${GO_CGO_ENABLED}" "${GO_TAGS}" "${KUBE_COMPONENTS[*]}" "${sums}"
}

# Everything that decides which .debs are unpacked. The Debian versions themselves are what
# the archive serves on the first run; they are recorded in versions.txt and stay fixed
# until the cache is removed.
debs_recipe() {
  printf 'recipe=%s suite=%s host=%s packages=%s binaries=%s cni=%s\n' \
    "${RECIPE_REVISION}" "${DEBIAN_SUITE}" "${HOST_CODENAME}" "${DEB_PACKAGES[*]}" \
    "${DEB_BINARIES[*]}" "${CNI_PLUGINS[*]}"
}

fingerprint() { sha256sum | cut -c1-16; }

# "reuse" when the stamp matches and every listed file is an executable; "build" otherwise.
cache_state() {
  local stamp="$1" want="$2"
  shift 2
  [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]] || {
    echo build
    return
  }
  local f
  for f in "$@"; do
    [[ -x "${f}" ]] || {
      echo build
      return
    }
  done
  echo reuse
}

kube_ldflags() {
  local minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  local flags="-s -w" pkg
  # The version the components report (--version, /version, kubectl version) and derive their compatibility
  # version from; hack/lib/version.sh sets the same variables.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${KUBE_BUILD_DATE}"
  done
  printf '%s\n' "${flags}"
}

kube_targets() {
  local c
  for c in "${KUBE_COMPONENTS[@]}"; do printf 'k8s.io/kubernetes/cmd/%s\n' "${c}"; done
}

compute_plan() {
  PINNED_KUBE_VERSION="$(pinned_kube_version)"
  [[ -n "${PINNED_KUBE_VERSION}" ]] || die "${GO_MODULE_DIR}/go.mod: no 'require k8s.io/kubernetes' line"
  KUBE_VERSION="${KUBE_VERSION:-${PINNED_KUBE_VERSION}}"
  if [[ ! "${KUBE_VERSION}" =~ ^v1\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
    usage_error "KUBE_VERSION=${KUBE_VERSION}: not a Kubernetes release version; use the form v1.37.2"
  fi
  CACHE_ROOT="${DRA_DRIVER_CACHE:-${HOME}/.cache/dra-driver}"
  OUT_DIR="${CACHE_ROOT}/k8s-${KUBE_VERSION}"
  BIN_DIR="${OUT_DIR}/bin"
  CNI_BIN_DIR="${OUT_DIR}/cni/bin"
  APT_DIR="${CACHE_ROOT}/debian"
  HOST_CODENAME="$(host_codename)"
  [[ -n "${HOST_CODENAME}" ]] || die "/etc/os-release: no VERSION_CODENAME; this script needs a Debian host"
  APT_ETC_DIR="${APT_ETC_DIR:-/etc/apt}"
  DEBIAN_MIRROR_URI="" DEBIAN_KEYRING=""
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
    DEBIAN_MIRROR_URI="${DEBIAN_MIRROR}"
  else
    local line
    if line="$(discover_debian_mirror "${HOST_CODENAME}")"; then
      DEBIAN_MIRROR_URI="${line%%$'\t'*}"
      DEBIAN_KEYRING="${line#*$'\t'}"
    fi
  fi
  DEBIAN_KEYRING="${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
  command -v go >/dev/null || die "no go command on PATH; install Go 1.26 or newer"
  GO_VERSION="$(GOTOOLCHAIN=local go env GOVERSION)"
  GO_MINOR="$(sed -E 's/^(go[0-9]+\.[0-9]+).*/\1/' <<<"${GO_VERSION}")"
  if [[ "${KUBE_VERSION}" == "${PINNED_KUBE_VERSION}" ]]; then
    BUILD_MODULE_DIR="${GO_MODULE_DIR}"
  else
    BUILD_MODULE_DIR="${OUT_DIR}/src"
  fi
  KUBE_STAMP_WANT="$(kube_recipe | fingerprint)"
  DEBS_STAMP_WANT="$(debs_recipe | fingerprint)"
  local kube_files=() deb_files=() x
  for x in "${KUBE_COMPONENTS[@]}"; do kube_files+=("${BIN_DIR}/${x}"); done
  for x in "${DEB_BINARIES[@]}"; do deb_files+=("${BIN_DIR}/${x}"); done
  for x in "${CNI_PLUGINS[@]}"; do deb_files+=("${CNI_BIN_DIR}/${x}"); done
  KUBE_STATE="$(cache_state "${OUT_DIR}/stamps/kube" "${KUBE_STAMP_WANT}" "${kube_files[@]}")"
  DEBS_STATE="$(cache_state "${OUT_DIR}/stamps/debs" "${DEBS_STAMP_WANT}" "${deb_files[@]}")"
}

print_plan() {
  local staging
  staging="$(staging_version "${KUBE_VERSION}")"
  printf 'kube-version %s\n' "${KUBE_VERSION}"
  printf 'kube-version-pinned %s\n' "${PINNED_KUBE_VERSION}"
  printf 'staging-version %s\n' "${staging}"
  printf 'go %s\n' "${GO_VERSION}"
  printf 'cache-dir %s\n' "${OUT_DIR}"
  printf 'bin-dir %s\n' "${BIN_DIR}"
  printf 'cni-bin-dir %s\n' "${CNI_BIN_DIR}"
  printf 'go-module %s\n' "${BUILD_MODULE_DIR}"
  if [[ "${BUILD_MODULE_DIR}" != "${GO_MODULE_DIR}" ]]; then
    printf 'go-module-generate require k8s.io/kubernetes@%s, replace each staging module with @%s\n' \
      "${KUBE_VERSION}" "${staging}"
  fi
  printf 'kube-stamp %s\n' "${KUBE_STAMP_WANT}"
  printf 'kube %s\n' "${KUBE_STATE}"
  printf 'kube-build CGO_ENABLED=%s nice -n 19 go build -trimpath -tags %s -ldflags "%s" -o %s/ %s\n' \
    "${GO_CGO_ENABLED}" "${GO_TAGS}" "$(KUBE_BUILD_DATE='<release-date>' kube_ldflags)" "${BIN_DIR}" \
    "$(kube_targets | tr '\n' ' ' | sed 's/ $//')"
  printf 'debs-stamp %s\n' "${DEBS_STAMP_WANT}"
  printf 'debs %s\n' "${DEBS_STATE}"
  printf 'debian-suite %s\n' "${DEBIAN_SUITE}"
  printf 'debian-host-suite %s\n' "${HOST_CODENAME}"
  printf 'debian-mirror %s\n' "${DEBIAN_MIRROR_URI:-(none found; set DEBIAN_MIRROR)}"
  printf 'debian-keyring %s\n' "${DEBIAN_KEYRING}"
  local p
  for p in "${DEB_PACKAGES[@]}"; do
    if [[ "${p}" == *@host ]]; then
      printf 'deb-package %s %s\n' "${p%@host}" "${HOST_CODENAME}"
    else
      printf 'deb-package %s %s\n' "${p}" "${DEBIAN_SUITE}"
    fi
  done
  for p in "${KUBE_COMPONENTS[@]}" "${DEB_BINARIES[@]}"; do printf 'binary %s/%s\n' "${BIN_DIR}" "${p}"; done
  for p in "${CNI_PLUGINS[@]}"; do printf 'cni-plugin %s/%s\n' "${CNI_BIN_DIR}" "${p}"; done
}

# ---------------------------------------------------------------------------------------------
# Kubernetes components from Go modules.

# Write a module under OUT_DIR/src for a KUBE_VERSION other than the pinned one, shaped like
# e2e/cluster/go/go.mod. The go and godebug lines and the list of staging modules come from
# that version's own go.mod (its `k8s.io/x v0.0.0` requirements, which upstream replaces with
# ./staging/src/k8s.io/x and we replace with the released k8s.io/x@v0.MINOR.PATCH).
generate_module() {
  local staging k8s_gomod m
  staging="$(staging_version "${KUBE_VERSION}")"
  log "generating a Go module for k8s.io/kubernetes@${KUBE_VERSION} in ${BUILD_MODULE_DIR}"
  rm -rf "${BUILD_MODULE_DIR}"
  mkdir -p "${BUILD_MODULE_DIR}"
  k8s_gomod="$(cd "${BUILD_MODULE_DIR}" && nice -n 19 go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" |
    awk -F'"' '$2 == "GoMod" { print $4 }')" || true
  [[ -f "${k8s_gomod}" ]] ||
    die "k8s.io/kubernetes@${KUBE_VERSION}: the Go module proxy has no such version; list them with: go list -m -versions k8s.io/kubernetes"
  {
    printf 'module %s\n\n' "$(awk '$1 == "module" { print $2; exit }' "${GO_MODULE_DIR}/go.mod")"
    grep -E '^(go|godebug) ' "${k8s_gomod}"
    printf '\ntool (\n'
    kube_targets | sed 's/^/\t/'
    printf ')\n'
  } >"${BUILD_MODULE_DIR}/go.mod"
  (
    cd "${BUILD_MODULE_DIR}"
    go mod edit -require="k8s.io/kubernetes@${KUBE_VERSION}"
    awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "${k8s_gomod}" | while read -r m; do
      go mod edit -replace="${m}=${m}@${staging}"
    done
    nice -n 19 go mod tidy
  ) || die "could not resolve the modules of k8s.io/kubernetes@${KUBE_VERSION} (staging modules @${staging})"
}

# Read `go build -x` output (its commands, one per line) on stdin and report: a line per
# binary as Go writes it into the staging directory $1 (with the time
# since the build started), and the packages compiled so far, as a live line on a terminal and
# otherwise a line every PROGRESS_EVERY_S seconds. Packages found in Go's build cache are not compiled.
report_go_build() {
  local staging_dir="$1" total="$2" line pkg="" compiled=0 shown=-1 heartbeat="${SECONDS}"
  local started="${SECONDS}"
  while IFS= read -r line; do
    case "${line}" in
      */compile\ -o\ *)
        compiled=$((compiled + 1))
        pkg="${line#* -p }"
        pkg="${pkg%% *}"
        ;;
      mv\ *" ${staging_dir}/"* | cp\ *" ${staging_dir}/"*)
        log "built ${line##*/} in $(duration $((SECONDS - started))) (${compiled} packages compiled so far)"
        continue
        ;;
      *) continue ;;
    esac
    if ((STDERR_TTY)); then
      if ((SECONDS != shown)); then
        shown="${SECONDS}"
        printf '\r\033[K[cluster-build %5ss] compiling: %d of at most %d packages, %s (%s)' \
          "${SECONDS}" "${compiled}" "${total}" "${pkg}" "$(duration $((SECONDS - started)))" >&2
      fi
    elif ((SECONDS - heartbeat >= PROGRESS_EVERY_S)); then
      heartbeat="${SECONDS}"
      log "compiling: ${compiled} of at most ${total} packages after $(duration $((SECONDS - started))), now ${pkg}"
    fi
  done
  ((STDERR_TTY)) && printf '\r\033[K' >&2
  return 0
}

build_kube() {
  if [[ "${BUILD_MODULE_DIR}" != "${GO_MODULE_DIR}" ]]; then
    generate_module
  fi
  KUBE_BUILD_DATE="$(cd "${BUILD_MODULE_DIR}" && go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
  [[ -n "${KUBE_BUILD_DATE}" ]] || KUBE_BUILD_DATE="1970-01-01T00:00:00Z"
  local staging_dir="${OUT_DIR}/stage-kube" c
  rm -rf "${staging_dir}"
  mkdir -p "${staging_dir}" "${BIN_DIR}" "${OUT_DIR}/stamps"
  rm -f "${OUT_DIR}/stamps/kube"
  # Start from the binaries already built: Go leaves a target whose build ID matches what it
  # would link (same packages, flags and module versions) as it is. Hard links cost no space;
  # Go replaces a target it relinks (rename, or remove then create), never writes into it.
  for c in "${KUBE_COMPONENTS[@]}"; do
    if [[ -x "${BIN_DIR}/${c}" ]]; then
      ln "${BIN_DIR}/${c}" "${staging_dir}/${c}" 2>/dev/null || cp -p "${BIN_DIR}/${c}" "${staging_dir}/${c}"
    fi
  done
  local step="${SECONDS}"
  log "downloading Go modules for k8s.io/kubernetes@${KUBE_VERSION}"
  (cd "${BUILD_MODULE_DIR}" && nice -n 19 go mod download) ||
    die "go mod download failed in ${BUILD_MODULE_DIR}"
  local targets=() total
  mapfile -t targets < <(kube_targets)
  total="$(cd "${BUILD_MODULE_DIR}" && GOFLAGS="${GOFLAGS:-} -mod=readonly" go list -deps -tags "${GO_TAGS}" "${targets[@]}" | wc -l)" ||
    die "go list of ${KUBE_COMPONENTS[*]} failed (module ${BUILD_MODULE_DIR})"
  log "Go modules ready in $(duration $((SECONDS - step))); compiling ${KUBE_COMPONENTS[*]} (${total} packages) with ${GO_VERSION}, nice 19: a cold Go build cache takes tens of minutes, a warm one compiles only what changed"
  step="${SECONDS}"
  local build_log="${OUT_DIR}/go-build.log"
  if ! (
    cd "${BUILD_MODULE_DIR}"
    CGO_ENABLED="${GO_CGO_ENABLED}" GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=readonly" \
      nice -n 19 go build -x -trimpath -tags "${GO_TAGS}" -ldflags "$(kube_ldflags)" \
      -o "${staging_dir}/" "${targets[@]}" 2>&1 >/dev/null |
      tee "${build_log}" | report_go_build "${staging_dir}" "${total}"
  ); then
    # The log holds every command Go ran; the errors are the lines that are not commands.
    grep -E '^(# |go: |.*\.go:[0-9]+)' "${build_log}" | tail -n 40 >&2 || true
    die "go build of ${KUBE_COMPONENTS[*]} failed (module ${BUILD_MODULE_DIR}; every command in ${build_log})"
  fi
  for c in "${KUBE_COMPONENTS[@]}"; do
    [[ -x "${staging_dir}/${c}" ]] || die "go build wrote no ${c} into ${staging_dir}"
    if [[ "${staging_dir}/${c}" -ef "${BIN_DIR}/${c}" ]]; then
      log "${c} up to date (its build ID matches; not relinked)"
      rm -f "${staging_dir}/${c}"
    else
      mv -f "${staging_dir}/${c}" "${BIN_DIR}/${c}"
    fi
  done
  rmdir "${staging_dir}"
  log "compiled and linked in $(duration $((SECONDS - step)))"
  write_file "${OUT_DIR}/stamps/kube" "${KUBE_STAMP_WANT}"
}

# ---------------------------------------------------------------------------------------------
# Debian packages, fetched with a private apt configuration under the cache: the system's
# sources, lists and package state are read-only to this script.

apt_private() {
  apt-get \
    -o Dir::Etc::SourceList="${APT_DIR}/sources.list" \
    -o Dir::Etc::SourceParts="${APT_DIR}/empty" \
    -o Dir::Etc::Preferences="${APT_DIR}/empty/preferences" \
    -o Dir::Etc::PreferencesParts="${APT_DIR}/empty" \
    -o Dir::State="${APT_DIR}/state" \
    -o Dir::State::status="${APT_DIR}/state/status" \
    -o Dir::Cache="${APT_DIR}/cache" \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false \
    -o APT::Sandbox::User="$(id -un)" \
    -q "$@"
}

fetch_debs() {
  local mirror="${DEBIAN_MIRROR_URI}" keyring="${DEBIAN_KEYRING}"
  [[ -n "${mirror}" ]] ||
    die "no apt source for '${HOST_CODENAME} main' in ${APT_ETC_DIR}/sources.list*; set DEBIAN_MIRROR to a Debian archive URI"
  [[ -r "${keyring}" ]] || die "${keyring}: keyring not readable; install debian-archive-keyring"
  mkdir -p "${APT_DIR}/empty" "${APT_DIR}/state/lists/partial" "${APT_DIR}/cache/archives/partial" "${APT_DIR}/debs"
  : >"${APT_DIR}/state/status"
  {
    printf 'deb [signed-by=%s] %s %s main\n' "${keyring}" "${mirror}" "${DEBIAN_SUITE}"
    printf 'deb [signed-by=%s] %s %s main\n' "${keyring}" "${mirror}" "${HOST_CODENAME}"
  } >"${APT_DIR}/sources.list"
  log "apt: updating the package lists of ${DEBIAN_SUITE} and ${HOST_CODENAME} (private state in ${APT_DIR})"
  local step="${SECONDS}"
  apt_private update >&2 || die "apt-get update with ${APT_DIR}/sources.list failed"
  log "apt: package lists updated in $(duration $((SECONDS - step)))"
  local specs=() p
  for p in "${DEB_PACKAGES[@]}"; do
    if [[ "${p}" == *@host ]]; then specs+=("${p%@host}/${HOST_CODENAME}"); else specs+=("${p}/${DEBIAN_SUITE}"); fi
  done
  log "apt: downloading ${specs[*]}"
  rm -f "${APT_DIR}/debs/"*.deb
  step="${SECONDS}"
  (cd "${APT_DIR}/debs" && apt_private download "${specs[@]}" >&2) || die "apt-get download ${specs[*]} failed"
  log "apt: downloaded ${#specs[@]} packages in $(duration $((SECONDS - step)))"
}

install_debs() {
  local root="${OUT_DIR}/debroot" deb step="${SECONDS}"
  rm -rf "${root}"
  mkdir -p "${root}" "${BIN_DIR}" "${CNI_BIN_DIR}" "${OUT_DIR}/stamps"
  rm -f "${OUT_DIR}/stamps/debs"
  : >"${OUT_DIR}/debs.txt.new"
  for deb in "${APT_DIR}/debs/"*.deb; do
    dpkg-deb -x "${deb}" "${root}"
    # shellcheck disable=SC2016 # ${Package} is dpkg-deb's format syntax, not the shell's
    dpkg-deb -W --showformat='${Package} ${Version}\n' "${deb}" >>"${OUT_DIR}/debs.txt.new"
  done
  local b found dir
  for b in "${DEB_BINARIES[@]}"; do
    found=""
    for dir in usr/bin usr/sbin bin sbin; do
      if [[ -f "${root}/${dir}/${b}" ]]; then
        found="${root}/${dir}/${b}"
        break
      fi
    done
    [[ -n "${found}" ]] || die "${b}: not found in the unpacked packages (${DEB_PACKAGES[*]})"
    install -m 0755 "${found}" "${BIN_DIR}/${b}"
    log "installed ${b} from ${found#"${root}/"}"
  done
  for b in "${CNI_PLUGINS[@]}"; do
    [[ -f "${root}/usr/lib/cni/${b}" ]] || die "CNI plugin ${b}: not in containernetworking-plugins"
    install -m 0755 "${root}/usr/lib/cni/${b}" "${CNI_BIN_DIR}/${b}"
  done
  # Only the binaries are needed; the rest of the unpacked tree is init scripts and docs.
  rm -rf "${root}"
  mv -f "${OUT_DIR}/debs.txt.new" "${OUT_DIR}/debs.txt"
  log "installed ${#DEB_BINARIES[@]} binaries and ${#CNI_PLUGINS[@]} CNI plugins in $(duration $((SECONDS - step)))"
  write_file "${OUT_DIR}/stamps/debs" "${DEBS_STAMP_WANT}"
}

write_file() {
  printf '%s\n' "$2" >"$1.tmp"
  mv -f "$1.tmp" "$1"
}

# ---------------------------------------------------------------------------------------------
# Checks.

# Run each binary's version command; fail unless it runs and prints a line matching the
# expected version. Writes versions.txt (one "name version-line" per binary).
verify_versions() {
  local report="${OUT_DIR}/versions.txt.new" c
  : >"${report}"
  check() {
    local name="$1" pattern="$2" output line
    shift 2
    output="$("$@" 2>&1)" || true
    line="$(grep -m 1 -E -- "${pattern}" <<<"${output}")" ||
      die "${name}: '$*' printed '$(head -n 1 <<<"${output}")', expected a line matching /${pattern}/; remove ${OUT_DIR} to rebuild"
    printf '%-24s %s\n' "${name}" "$(sed -E 's/^[[:space:]]+//' <<<"${line}")" >>"${report}"
  }
  local kube_re="^Kubernetes ${KUBE_VERSION//./\\.}$"
  for c in "${KUBE_COMPONENTS[@]}"; do
    if [[ "${c}" == kubectl ]]; then
      check kubectl "^Client Version: ${KUBE_VERSION//./\\.}$" "${BIN_DIR}/kubectl" version --client
    else
      check "${c}" "${kube_re}" "${BIN_DIR}/${c}" --version
    fi
  done
  check etcd '^etcd Version: 3\.' "${BIN_DIR}/etcd" --version
  check etcdctl '^etcdctl version: 3\.' "${BIN_DIR}/etcdctl" version
  check etcdutl '^etcdutl version: 3\.' "${BIN_DIR}/etcdutl" version
  check containerd '^containerd .* 1\.7\.' "${BIN_DIR}/containerd" --version
  check containerd-shim-runc-v2 '^[[:space:]]*Version:[[:space:]]+1\.7\.' "${BIN_DIR}/containerd-shim-runc-v2" -v
  check ctr '^ctr .* 1\.7\.' "${BIN_DIR}/ctr" --version
  check runc '^runc version 1\.' "${BIN_DIR}/runc" --version
  check busybox '^BusyBox v1\.' "${BIN_DIR}/busybox"
  check umoci '^umoci version 0\.' "${BIN_DIR}/umoci" --version
  for c in "${CNI_PLUGINS[@]}"; do
    check "cni/${c}" '"cniVersion"' env CNI_COMMAND=VERSION "${CNI_BIN_DIR}/${c}"
  done
  # CDI injection needs containerd 1.7's CRI options; 1.6 has no enable_cdi at all.
  "${BIN_DIR}/containerd" config default 2>/dev/null | grep -q 'enable_cdi' ||
    die "containerd: its default config has no enable_cdi, so it cannot inject CDI devices"
  printf '%-24s %s\n' go "${GO_VERSION}" >>"${report}"
  mv -f "${report}" "${OUT_DIR}/versions.txt"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SMOKE_DIR=""
SMOKE_PIDS=()
RUN_CONTAINERD_CREATED=0
smoke_cleanup() {
  local pid
  for pid in "${SMOKE_PIDS[@]}"; do
    if kill -0 "${pid}" 2>/dev/null; then
      kill "${pid}" 2>/dev/null || true
      wait "${pid}" 2>/dev/null || true
    fi
  done
  SMOKE_PIDS=()
  # containerd creates /run/containerd (for shim sockets) whatever its state dir is. Remove it
  # only when this run created it and it is still empty: another runtime may use it by now.
  if [[ "${RUN_CONTAINERD_CREATED}" == 1 && -d /run/containerd ]]; then
    rmdir /run/containerd 2>/dev/null || log "warning: /run/containerd is not empty; left in place"
  fi
  if [[ -n "${SMOKE_DIR}" ]]; then
    # Snapshots are mounted only while a container runs; nothing should be mounted here.
    if grep -q " ${SMOKE_DIR}/" /proc/self/mounts; then
      log "warning: mounts left under ${SMOKE_DIR}; not removing it"
    else
      rm -rf "${SMOKE_DIR}"
    fi
  fi
}

wait_for() {
  local what="$1" tries="$2"
  shift 2
  local i
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "${what} did not come up; see the logs in ${SMOKE_DIR}"
}

smoke_etcd() {
  local dir="${SMOKE_DIR}/etcd" client peer endpoint
  mkdir -p "${dir}"
  client="$(free_port)"
  peer="$(free_port)"
  endpoint="http://127.0.0.1:${client}"
  log "smoke: starting etcd on ${endpoint}"
  "${BIN_DIR}/etcd" --name smoke --data-dir "${dir}/data" \
    --listen-client-urls "${endpoint}" --advertise-client-urls "${endpoint}" \
    --listen-peer-urls "http://127.0.0.1:${peer}" --initial-advertise-peer-urls "http://127.0.0.1:${peer}" \
    --initial-cluster "smoke=http://127.0.0.1:${peer}" >"${dir}/etcd.log" 2>&1 &
  local pid=$!
  SMOKE_PIDS+=("${pid}")
  wait_for etcd 80 "${BIN_DIR}/etcdctl" --endpoints "${endpoint}" endpoint health
  "${BIN_DIR}/etcdctl" --endpoints "${endpoint}" put /smoke/key value >/dev/null
  [[ "$("${BIN_DIR}/etcdctl" --endpoints "${endpoint}" get --print-value-only /smoke/key)" == value ]] ||
    die "etcd: put/get round trip failed"
  kill "${pid}"
  wait "${pid}" 2>/dev/null || true
  log "smoke: etcd served a put/get and stopped"
}

smoke_containerd() {
  local dir="${SMOKE_DIR}/containerd" sock
  mkdir -p "${dir}/cdi" "${dir}/net.d"
  sock="${dir}/containerd.sock"
  cat >"${dir}/config.toml" <<EOF
version = 2
root = "${dir}/root"
state = "${dir}/state"
[grpc]
  address = "${sock}"
[ttrpc]
  address = "${sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
  cdi_spec_dirs = ["${dir}/cdi"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR}"
    conf_dir = "${dir}/net.d"
EOF
  [[ -e /run/containerd ]] || RUN_CONTAINERD_CREATED=1
  log "smoke: starting containerd on unix://${sock}"
  PATH="${BIN_DIR}:${PATH}" "${BIN_DIR}/containerd" --config "${dir}/config.toml" >"${dir}/containerd.log" 2>&1 &
  local pid=$!
  SMOKE_PIDS+=("${pid}")
  local ctr=("${BIN_DIR}/ctr" --address "${sock}")
  wait_for containerd 80 "${ctr[@]}" version
  "${ctr[@]}" plugins ls | grep -Eq 'io\.containerd\.grpc\.v1[[:space:]]+cri[[:space:]].*ok' ||
    die "containerd: the CRI plugin did not load; see ${dir}/containerd.log"
  "${BIN_DIR}/containerd" --config "${dir}/config.toml" config dump 2>/dev/null | grep -q 'enable_cdi = true' ||
    die "containerd: enable_cdi is not on in the effective configuration"

  # An image with no registry: a busybox rootfs packed by umoci, loaded by ctr.
  local img="${dir}/image"
  mkdir -p "${img}/rootfs/bin"
  install -m 0755 "${BIN_DIR}/busybox" "${img}/rootfs/bin/busybox"
  ln -s busybox "${img}/rootfs/bin/sh"
  (
    cd "${img}"
    "${BIN_DIR}/umoci" init --layout layout
    "${BIN_DIR}/umoci" new --image layout:smoke
    "${BIN_DIR}/umoci" insert --image layout:smoke rootfs /
    "${BIN_DIR}/umoci" config --image layout:smoke --config.cmd /bin/sh --os linux --architecture amd64
    tar -C layout -cf ../image.tar .
  ) >"${dir}/umoci.log" 2>&1 || die "umoci could not build the smoke image; see ${dir}/umoci.log"
  "${ctr[@]}" -n smoke images import --base-name local/smoke "${dir}/image.tar" >/dev/null ||
    die "ctr could not import the OCI archive built by umoci"
  "${ctr[@]}" -n smoke images ls -q | grep -qx 'local/smoke:smoke' ||
    die "ctr: the imported image is not listed as local/smoke:smoke"
  kill "${pid}"
  wait "${pid}" 2>/dev/null || true
  log "smoke: containerd loaded CRI with CDI on, imported a umoci image, and stopped"
}

run_smoke() {
  SMOKE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/dra-cluster-smoke.XXXXXX")"
  trap smoke_cleanup EXIT
  smoke_etcd
  smoke_containerd
  smoke_cleanup
  trap - EXIT
}

# ---------------------------------------------------------------------------------------------

main() {
  local mode=build
  while (($#)); do
    case "$1" in
      --smoke) mode=smoke ;;
      --print-plan) mode=plan ;;
      -h | --help)
        sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        return 0
        ;;
      *) usage_error "unknown argument: $1" ;;
    esac
    shift
  done
  compute_plan
  if [[ "${mode}" == plan ]]; then
    print_plan
    return 0
  fi

  mkdir -p "${OUT_DIR}"
  exec 9>"${CACHE_ROOT}/.lock"
  if ! flock -n 9; then
    log "waiting for another build on ${CACHE_ROOT}"
    flock 9
    compute_plan # the other run may have filled the cache
  fi
  if [[ "${KUBE_STATE}" == reuse && "${DEBS_STATE}" == reuse ]]; then
    log "cache warm: k8s.io/kubernetes ${KUBE_VERSION} and the Debian binaries reused from ${OUT_DIR}; nothing to build"
  else
    log "k8s.io/kubernetes ${KUBE_VERSION}: cache ${OUT_DIR} (Kubernetes components: ${KUBE_STATE}, Debian binaries: ${DEBS_STATE})"
  fi
  if [[ "${DEBS_STATE}" == build ]]; then
    fetch_debs
    install_debs
  fi
  if [[ "${KUBE_STATE}" == build ]]; then
    build_kube
  fi
  local step="${SECONDS}"
  verify_versions
  log "checked in $(duration $((SECONDS - step))): all ${#KUBE_COMPONENTS[@]} + ${#DEB_BINARIES[@]} binaries and ${#CNI_PLUGINS[@]} CNI plugins run; versions in ${OUT_DIR}/versions.txt"
  if [[ "${mode}" == smoke ]]; then
    run_smoke
  fi
  printf '%s\n' "${BIN_DIR}"
}

# Sourced (the tests call its functions), it defines them and runs nothing.
if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
  main "$@"
fi
