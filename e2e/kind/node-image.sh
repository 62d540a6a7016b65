#!/usr/bin/env bash
# Build, or reuse, a kind node image without any container registry.
#
# Usage: e2e/kind/node-image.sh [--help]
#
# Prints the image's name (dra-driver/kind-node:<kube version>-<key>) on stdout; progress goes
# to stderr. Needs root, a running dockerd (e2e/kind/engine.sh up), Go, debootstrap (installed
# from Debian's packages when missing) and the Go module proxy and a Debian mirror on a cold
# cache.
#
# kind's own `kind build node-image` starts from kindest/base and pulls the images kubeadm
# needs, both from a registry. This script lays the image out the same way from local parts:
#
#   root file system  Debian trixie by debootstrap: systemd, the CNI plugins, iptables,
#                     nftables, mount tools; cached by its package list and mirror.
#   containerd        containerd, ctr and containerd-shim-runc-v2 built from the Go module
#                     e2e/kind/containerd pins (v2.3.4), runc from e2e/kind/runc's (v1.4.3,
#                     with seccomp: needs gcc and libseccomp-dev, installed when missing) and
#                     crictl from e2e/kind/crictl's (v1.36.0): the versions kind v0.33.0
#                     builds from source.
#   Kubernetes        kubelet from e2e/cluster/build.sh's cache; kubeadm, kubectl and
#                     kube-proxy built here from the same pinned k8s.io/kubernetes module.
#   node files        e2e/kind/node/: the entrypoint, containerd's configuration (CDI on,
#                     systemd cgroups, runc behind runc-capfilter), the containerd and kubelet
#                     units, a bridge CNI configuration, /kind/version and /kind/manifests/.
#   images            kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
#                     etcd (go.etcd.io/etcd/server/v3, e2e/kind/etcd), CoreDNS
#                     (github.com/coredns/coredns, e2e/kind/coredns) and pause (e2e/kind/pause),
#                     each built from Go, named as `kubeadm config images list` names them, and
#                     imported into the node's containerd store (pinned, not unpacked), as kind
#                     does; local-path-provisioner (e2e/kind/local-path-provisioner, v0.0.30)
#                     and its helper (sh, rm, mkdir from the root file system) for the default
#                     StorageClass. No kindnetd (the bridge configuration serves one node).
#
# The image is cached in Docker under a key over every input; a run that finds it prints its
# name in about a second.
#
# Environment:
#   DRA_DRIVER_CACHE  cache root; default $HOME/.cache/dra-driver. Work goes to .../kind/.
#   DEBIAN_MIRROR     Debian archive URI; default: the one this machine's apt sources name.
#   GOCACHE, GOMODCACHE, GOPROXY  as for the go command.
#
# Exit status: 0 on success, 1 when a step fails, 2 on a usage error.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly ROOT
readonly HERE="${ROOT}/e2e/kind"
readonly CACHE="${DRA_DRIVER_CACHE:-${HOME}/.cache/dra-driver}/kind"
readonly SUITE="trixie"
readonly IMAGE_REPO="dra-driver/kind-node"
readonly ROOTFS_PACKAGES="systemd,dbus,containernetworking-plugins,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,e2fsprogs"
readonly DOCKER="/usr/bin/docker"

log() { printf '[kind-node-image %5ss] %s\n' "${SECONDS}" "$*" >&2; }
die() {
  printf 'e2e/kind/node-image.sh: error: %s\n' "$*" >&2
  exit 1
}
on_error() {
  local rc=$?
  printf 'e2e/kind/node-image.sh: error: line %s: "%s" exited with status %s\n' \
    "${BASH_LINENO[0]}" "${BASH_COMMAND}" "${rc}" >&2
}
trap on_error ERR

case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,/^set -Eeuo pipefail$/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    printf 'e2e/kind/node-image.sh: unknown argument %s\nusage: e2e/kind/node-image.sh [--help]\n' "$1" >&2
    exit 2
    ;;
esac

[[ "$(id -u)" == 0 ]] || die "needs root (debootstrap, docker)"
"${DOCKER}" info >/dev/null 2>&1 || die "dockerd does not answer: run e2e/kind/engine.sh up"
command -v go >/dev/null || die "go is not on PATH"

KUBE_VERSION="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "${ROOT}/e2e/cluster/go/go.mod")"
readonly KUBE_VERSION
[[ -n "${KUBE_VERSION}" ]] || die "no k8s.io/kubernetes pin in e2e/cluster/go/go.mod"

mkdir -p "${CACHE}"
exec 9>"${CACHE}/node-image.lock"
flock 9

# --- Go programs -------------------------------------------------------------------------------

# go_build DIR FILE PACKAGE: build PACKAGE in module DIR (its go.sum pins every module) to FILE.
go_build() {
  local dir="$1" file="$2" package="$3"
  mkdir -p "$(dirname "${file}")"
  (cd "${dir}" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" nice -n 10 \
    go build -trimpath -ldflags "-s -w" -o "${file}" "${package}")
}

kube_ldflags() {
  local minor="${KUBE_VERSION#v1.}" flags="-s -w" pkg
  minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean"
  done
  printf '%s\n' "${flags}"
}

# kubeadm, kubectl and kube-proxy from the module e2e/cluster/go pins. Its go.sum lists the
# modules of the four components build.sh makes; the few more these three need (coredns's
# Corefile migration, nftables, netlink) are added by the go command and checked against the
# Go checksum database.
build_kube_extras() {
  local dir="${CACHE}/k8s-${KUBE_VERSION}"
  local c ok=1
  for c in kubeadm kubectl kube-proxy; do
    [[ -x "${dir}/bin/${c}" ]] || ok=0
  done
  if ((ok)) && [[ "$("${dir}/bin/kubeadm" version -o short 2>/dev/null)" == "${KUBE_VERSION}" ]]; then
    return
  fi
  log "building kubeadm, kubectl, kube-proxy ${KUBE_VERSION} from k8s.io/kubernetes"
  rm -rf "${dir}/src" "${dir}/bin.tmp"
  mkdir -p "${dir}/src" "${dir}/bin.tmp"
  cp "${ROOT}/e2e/cluster/go/go.mod" "${ROOT}/e2e/cluster/go/go.sum" "${dir}/src/"
  (cd "${dir}/src" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod" nice -n 10 \
    go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$(kube_ldflags)" \
    -o "${dir}/bin.tmp/" k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kube-proxy)
  rm -rf "${dir:?}/bin"
  mv "${dir}/bin.tmp" "${dir}/bin"
}

# build_tool NAME PACKAGE BINARY: the module e2e/kind/NAME's PACKAGE built to
# $CACHE/tools/NAME/BINARY; rebuilt when the module's go.mod, go.sum or sources change.
build_tool() {
  local name="$1" package="$2" binary="$3"
  local src="${HERE}/${name}" out="${CACHE}/tools/${name}"
  local key
  key="$(cat "${src}"/go.* "${src}"/*.go | sha256sum | cut -c1-16)"
  if [[ -x "${out}/${binary}" && "$(cat "${out}/key" 2>/dev/null)" == "${key}" ]]; then
    return
  fi
  log "building ${binary} (${package}) from e2e/kind/${name}"
  rm -rf "${out}" "${out}.tmp"
  go_build "${src}" "${out}.tmp/${binary}" "${package}"
  echo "${key}" >"${out}.tmp/key"
  mv "${out}.tmp" "${out}"
}

# pinned_version NAME MODULE: the version of MODULE that e2e/kind/NAME/go.mod requires.
pinned_version() {
  awk -v module="$2" '{for (i = 1; i < NF; i++) if ($i == module) {print $(i + 1); exit}}' \
    "${HERE}/$1/go.mod"
}

# build_pinned NAME OUT CGO TAGS LDFLAGS PACKAGE...: the PACKAGEs of the module e2e/kind/NAME
# pins (its go.sum pins every module) built into $CACHE/tools/OUT/, with cgo on (CGO 1) or
# off (0), the build tags TAGS and the linker flags LDFLAGS; rebuilt when the module's files
# or the flags change.
build_pinned() {
  local name="$1" out="${CACHE}/tools/$2" cgo="$3" tags="$4" ldflags="$5"
  shift 5
  local src="${HERE}/${name}" key
  key="$({
    cat "${src}"/go.* "${src}"/*.go
    printf '%s\n' "${cgo}" "${tags}" "${ldflags}" "$@"
  } | sha256sum | cut -c1-16)"
  if [[ "$(cat "${out}/key" 2>/dev/null)" == "${key}" ]]; then
    return
  fi
  log "building $* from e2e/kind/${name}"
  rm -rf "${out}" "${out}.tmp"
  mkdir -p "${out}.tmp"
  (cd "${src}" && CGO_ENABLED="${cgo}" GOFLAGS="${GOFLAGS:-} -mod=readonly" nice -n 10 \
    go build -trimpath -tags "${tags}" -ldflags "${ldflags}" -o "${out}.tmp/" "$@")
  echo "${key}" >"${out}.tmp/key"
  mv "${out}.tmp" "${out}"
}

# containerd, runc and crictl at the versions kind v0.33.0's images/base/Dockerfile builds.
# containerd as kind builds it (its Makefile: the tags
# no_aufs no_zfs no_btrfs no_devmapper urfave_cli_no_docs, the version in the linker flags),
# but static like containerd's own static release (cgo on, osusergo netgo static_build,
# -extldflags -static) so it needs no library of the node; the shim without cgo and with
# no_grpc, as containerd's Makefile builds it.
build_runtime() {
  local pkg="github.com/containerd/containerd/v2"
  local tags="no_aufs no_zfs no_btrfs no_devmapper urfave_cli_no_docs"
  local ldflags="-s -w -X ${pkg}/version.Version=${CONTAINERD_VERSION} -X ${pkg}/version.Package=${pkg}"
  build_pinned containerd containerd 1 "${tags} osusergo netgo static_build" \
    "${ldflags} -extldflags -static" "${pkg}/cmd/containerd" "${pkg}/cmd/ctr"
  build_pinned containerd containerd-shim 0 "${tags} no_grpc" "${ldflags}" \
    "${pkg}/cmd/containerd-shim-runc-v2"
  # runc with seccomp (cgo and libseccomp), static as its Makefile's `static` target builds it
  # (not PIE here); its version comes from the module's VERSION file.
  if ! dpkg-query -W -f '${Status}' libseccomp-dev 2>/dev/null | grep -q 'ok installed'; then
    log "installing libseccomp-dev (runc's seccomp support)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libseccomp-dev \
      pkg-config >&2
  fi
  build_pinned runc runc 1 "seccomp urfave_cli_no_docs netgo osusergo" "-s -w -extldflags -static" \
    github.com/opencontainers/runc
  # crictl as cri-tools' Makefile builds it (no cgo, its version without the v).
  build_pinned crictl crictl 0 "" "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" \
    sigs.k8s.io/cri-tools/cmd/crictl
}

# --- The root file system ----------------------------------------------------------------------

debian_mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
    printf '%s\n' "${DEBIAN_MIRROR}"
    return
  fi
  local files=() file uri
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "${file}" ]] && files+=("${file}")
  done
  uri="$(awk '/^deb / && $2 !~ /security/ {print $2; exit} /^URIs:/ && $2 !~ /security/ {print $2; exit}' \
    "${files[@]}" </dev/null)"
  [[ -n "${uri}" ]] || die "no Debian mirror in /etc/apt/sources.list*: set DEBIAN_MIRROR"
  printf '%s\n' "${uri}"
}

# Prints the Docker image holding the root file system, building and importing it when missing.
rootfs_image() {
  local mirror key dir image
  mirror="$(debian_mirror)"
  key="$(printf '%s\n' "${SUITE}" "${mirror}" "${ROOTFS_PACKAGES}" | sha256sum | cut -c1-12)"
  dir="${CACHE}/rootfs-${SUITE}-${key}"
  image="dra-driver/kind-rootfs:${SUITE}-${key}"
  if [[ ! -s "${dir}/rootfs.tar" ]]; then
    command -v debootstrap >/dev/null ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
    log "debootstrap ${SUITE} from ${mirror} (${ROOTFS_PACKAGES//,/ })"
    rm -rf "${dir}.tmp"
    mkdir -p "${dir}.tmp"
    nice -n 10 debootstrap --variant=minbase --include="${ROOTFS_PACKAGES}" \
      "${SUITE}" "${dir}.tmp/rootfs" "${mirror}" >"${dir}.tmp/debootstrap.log" 2>&1 ||
      die "debootstrap failed; its log: ${dir}.tmp/debootstrap.log"
    rm -rf "${dir}.tmp/rootfs/var/cache/apt/archives/"*.deb "${dir}.tmp/rootfs/var/lib/apt/lists/"*_Packages
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    chroot "${dir}.tmp/rootfs" dpkg-query -W -f '${Package} ${Version}\n' >"${dir}.tmp/packages.txt"
    tar --numeric-owner -C "${dir}.tmp/rootfs" -cf "${dir}.tmp/rootfs.tar" .
    rm -rf "${dir}.tmp/rootfs" "${dir}"
    mv "${dir}.tmp" "${dir}"
  fi
  if ! "${DOCKER}" image inspect "${image}" >/dev/null 2>&1; then
    log "importing the root file system as ${image}"
    "${DOCKER}" import "${dir}/rootfs.tar" "${image}" >/dev/null
  fi
  printf '%s\n' "${image}"
}

# --- Images ------------------------------------------------------------------------------------

# image_from BASE TAG BINARY [ENTRYPOINT]: an image of one binary in /usr/local/bin.
image_from() {
  local base="$1" tag="$2" binary="$3" entrypoint="${4:-}"
  local ctx
  ctx="$(mktemp -d "${CACHE}/image-context.XXXXXX")"
  cp "${binary}" "${ctx}/"
  {
    printf 'FROM %s\n' "${base}"
    printf 'COPY %s /usr/local/bin/%s\n' "$(basename "${binary}")" "$(basename "${binary}")"
    printf 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin\n'
    if [[ -n "${entrypoint}" ]]; then
      printf 'ENTRYPOINT ["/usr/local/bin/%s"]\n' "${entrypoint}"
    fi
  } >"${ctx}/Dockerfile"
  DOCKER_BUILDKIT=0 "${DOCKER}" build -q -t "${tag}" "${ctx}" >/dev/null
  rm -rf "${ctx}"
}

# The version an image name carries (registry.k8s.io/etcd:3.7.0-0 -> 3.7.0-0).
tag_of() { printf '%s\n' "${1##*:}"; }

# --- Build -------------------------------------------------------------------------------------

log "Kubernetes ${KUBE_VERSION}"
CLUSTER_BIN="$(nice -n 10 "${ROOT}/e2e/cluster/build.sh" | tail -n 1)"
readonly CLUSTER_BIN
build_kube_extras
ROOTFS_IMAGE="$(rootfs_image)"
readonly ROOTFS_IMAGE
KUBE_BIN="${CACHE}/k8s-${KUBE_VERSION}/bin"
readonly KUBE_BIN
build_tool etcd go.etcd.io/etcd/server/v3 etcd
build_tool coredns github.com/coredns/coredns coredns
build_tool pause . pause
build_tool capfilter . runc-capfilter
CONTAINERD_VERSION="$(pinned_version containerd github.com/containerd/containerd/v2)"
RUNC_VERSION="$(pinned_version runc github.com/opencontainers/runc)"
CRICTL_VERSION="$(pinned_version crictl sigs.k8s.io/cri-tools)"
LPP_VERSION="$(pinned_version local-path-provisioner github.com/rancher/local-path-provisioner)"
readonly CONTAINERD_VERSION RUNC_VERSION CRICTL_VERSION LPP_VERSION
build_runtime
runc_version="$("${CACHE}/tools/runc/runc" --version | awk 'NR == 1 {print $3}')"
[[ "${runc_version}" == "${RUNC_VERSION#v}" ]] ||
  die "runc built from e2e/kind/runc reports ${runc_version:-no version}, not ${RUNC_VERSION}"
# local-path-provisioner as its scripts/build does (no cgo, static, its version).
build_pinned local-path-provisioner local-path-provisioner 0 "" \
  "-s -w -extldflags -static -X main.VERSION=${LPP_VERSION}" github.com/rancher/local-path-provisioner

mapfile -t REQUIRED < <("${KUBE_BIN}/kubeadm" config images list --kubernetes-version "${KUBE_VERSION}")
image_named() {
  local want="$1" image
  for image in "${REQUIRED[@]}"; do
    if [[ "${image}" == "registry.k8s.io/${want}:"* ]]; then
      printf '%s\n' "${image}"
      return
    fi
  done
  die "kubeadm ${KUBE_VERSION} lists no ${want} image: ${REQUIRED[*]}"
}
ETCD_IMAGE="$(image_named etcd)"
COREDNS_IMAGE="$(image_named coredns/coredns)"
PAUSE_IMAGE="$(image_named pause)"
readonly ETCD_IMAGE COREDNS_IMAGE PAUSE_IMAGE
etcd_version="$("${CACHE}/tools/etcd/etcd" --version | awk '/^etcd Version:/ {print $3}')"
[[ "$(tag_of "${ETCD_IMAGE}")" == "${etcd_version}-"* ]] ||
  die "kubeadm wants ${ETCD_IMAGE}, e2e/kind/etcd builds etcd ${etcd_version}: move its pin"
coredns_version="$(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/coredns/coredns") print $(i + 1)}' \
  "${HERE}/coredns/go.mod")"
[[ "$(tag_of "${COREDNS_IMAGE}")" == "${coredns_version}" ]] ||
  die "kubeadm wants ${COREDNS_IMAGE}, e2e/kind/coredns pins ${coredns_version}: move its pin"
grep -q "^ *sandbox = '${PAUSE_IMAGE}'" "${HERE}/node/containerd-config.toml" ||
  die "e2e/kind/node/containerd-config.toml's pinned sandbox image is not ${PAUSE_IMAGE}"
# The default StorageClass's provisioner and the helper pod it starts (default-storage.yaml
# names both; kind's own are docker.io/kindest/local-path-provisioner and -helper).
readonly STORAGE_IMAGE="docker.io/dra-driver/local-path-provisioner:${LPP_VERSION}"
readonly HELPER_IMAGE="docker.io/dra-driver/local-path-helper:${SUITE}"
for image in "${STORAGE_IMAGE}" "${HELPER_IMAGE}"; do
  grep -q "${image}\$" "${HERE}/node/default-storage.yaml" ||
    die "e2e/kind/node/default-storage.yaml does not name ${image}"
done

# The node's build context: the files of e2e/kind/node and the binaries.
CONTEXT="${CACHE}/node-context"
rm -rf "${CONTEXT}"
mkdir -p "${CONTEXT}"
cp "${HERE}"/node/* "${CONTEXT}/"
cp "${CLUSTER_BIN}/kubelet" "${KUBE_BIN}/kubeadm" "${KUBE_BIN}/kubectl" "${CONTEXT}/"
cp "${CACHE}/tools/capfilter/runc-capfilter" "${CACHE}/tools/containerd/containerd" \
  "${CACHE}/tools/containerd/ctr" "${CACHE}/tools/containerd-shim/containerd-shim-runc-v2" \
  "${CACHE}/tools/crictl/crictl" "${CACHE}/tools/runc/runc" "${CONTEXT}/"
printf '%s\n' "${KUBE_VERSION}" >"${CONTEXT}/version"

# Every input of the image: the context, the root file system, the image binaries.
KEY="$(
  {
    (cd "${CONTEXT}" && sha256sum -- *)
    echo "${ROOTFS_IMAGE}"
    sha256sum "${CLUSTER_BIN}"/kube-apiserver "${CLUSTER_BIN}"/kube-controller-manager \
      "${CLUSTER_BIN}"/kube-scheduler "${KUBE_BIN}/kube-proxy" "${CACHE}"/tools/etcd/etcd \
      "${CACHE}"/tools/coredns/coredns "${CACHE}"/tools/pause/pause \
      "${CACHE}"/tools/local-path-provisioner/local-path-provisioner \
      "${HERE}"/local-path-provisioner/helper.Dockerfile | cut -d' ' -f1
    printf '%s\n' "${REQUIRED[@]}" "${STORAGE_IMAGE}" "${HELPER_IMAGE}"
  } | sha256sum | cut -c1-12
)"
readonly KEY
readonly NODE_IMAGE="${IMAGE_REPO}:${KUBE_VERSION}-${KEY}"
if "${DOCKER}" image inspect "${NODE_IMAGE}" >/dev/null 2>&1; then
  log "reusing ${NODE_IMAGE}"
  printf '%s\n' "${NODE_IMAGE}"
  exit 0
fi

log "building the node's files into ${IMAGE_REPO}-stage:${KEY}"
DOCKER_BUILDKIT=0 "${DOCKER}" build -q --build-arg "BASE_IMAGE=${ROOTFS_IMAGE}" \
  -t "${IMAGE_REPO}-stage:${KEY}" "${CONTEXT}" >/dev/null

log "building the images kubeadm needs: ${REQUIRED[*]}"
for component in kube-apiserver kube-controller-manager kube-scheduler; do
  image_from scratch "$(image_named "${component}")" "${CLUSTER_BIN}/${component}"
done
# kube-proxy programs iptables: the node's root file system has it.
image_from "${ROOTFS_IMAGE}" "$(image_named kube-proxy)" "${KUBE_BIN}/kube-proxy"
image_from scratch "${ETCD_IMAGE}" "${CACHE}/tools/etcd/etcd"
image_from scratch "${COREDNS_IMAGE}" "${CACHE}/tools/coredns/coredns" coredns
image_from scratch "${PAUSE_IMAGE}" "${CACHE}/tools/pause/pause" pause
log "building the default StorageClass's images: ${STORAGE_IMAGE} ${HELPER_IMAGE}"
image_from scratch "${STORAGE_IMAGE}" "${CACHE}/tools/local-path-provisioner/local-path-provisioner" \
  local-path-provisioner
DOCKER_BUILDKIT=0 "${DOCKER}" build -q --build-arg "BASE_IMAGE=${ROOTFS_IMAGE}" -t "${HELPER_IMAGE}" \
  -f "${HERE}/local-path-provisioner/helper.Dockerfile" "${HERE}/local-path-provisioner" >/dev/null

archive="${CACHE}/node-images.tar"
"${DOCKER}" save -o "${archive}" "${REQUIRED[@]}" "${STORAGE_IMAGE}" "${HELPER_IMAGE}"

log "importing them into the node's containerd (pinned, not unpacked)"
builder="dra-kind-build-${KEY}"
"${DOCKER}" rm -f "${builder}" >/dev/null 2>&1 || true
"${DOCKER}" run -d --privileged --name "${builder}" --entrypoint /bin/sleep \
  "${IMAGE_REPO}-stage:${KEY}" infinity >/dev/null
cleanup_builder() { "${DOCKER}" rm -f "${builder}" >/dev/null 2>&1 || true; }
trap cleanup_builder EXIT
"${DOCKER}" exec -d "${builder}" sh -c 'containerd >/var/log/containerd-build.log 2>&1'
for _ in $(seq 1 30); do
  if "${DOCKER}" exec "${builder}" ctr version >/dev/null 2>&1; then
    break
  fi
  sleep 1
done
server_version="$("${DOCKER}" exec "${builder}" ctr version |
  awk '$1 == "Server:" {server = 1} server && $1 == "Version:" {print $2; exit}')"
[[ "${server_version}" == "${CONTAINERD_VERSION}" ]] ||
  die "the node's containerd reports ${server_version:-no version}, not ${CONTAINERD_VERSION}"
"${DOCKER}" exec -i "${builder}" ctr --namespace=k8s.io images import \
  --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - <"${archive}" >/dev/null
"${DOCKER}" exec "${builder}" ctr --namespace=k8s.io images list -q >&2
# shellcheck disable=SC2016 # run by the node's shell
"${DOCKER}" exec "${builder}" sh -c 'kill "$(pidof containerd)"; while pidof containerd >/dev/null; do sleep 0.2; done; rm -f /var/log/containerd-build.log'
"${DOCKER}" commit \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  "${builder}" "${NODE_IMAGE}" >/dev/null
"${DOCKER}" tag "${NODE_IMAGE}" "${IMAGE_REPO}:${KUBE_VERSION}"
cleanup_builder
"${DOCKER}" rmi "${IMAGE_REPO}-stage:${KEY}" >/dev/null || true
rm -f "${archive}"
# Older node images of this repository (1.5 GB each) go; one a container still uses stays.
for old in $("${DOCKER}" image ls "${IMAGE_REPO}" --format '{{.Repository}}:{{.Tag}}'); do
  if [[ "${old}" != "${NODE_IMAGE}" && "${old}" != "${IMAGE_REPO}:${KUBE_VERSION}" ]]; then
    "${DOCKER}" rmi "${old}" >/dev/null 2>&1 || true
  fi
done
log "built ${NODE_IMAGE} ($("${DOCKER}" image inspect -f '{{.Size}}' "${NODE_IMAGE}") bytes)"
printf '%s\n' "${NODE_IMAGE}"
