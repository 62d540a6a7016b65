#!/usr/bin/env bash
# dra-driver on kind, end to end: for users with Docker.
#
# Usage: e2e/kind/run.sh [--keep] [--reuse] [--skip-suite] [--help]
#
#   1. creates a kind cluster from e2e/kind/kind-config.yaml (DRA feature gates, CDI in
#      containerd), or with --reuse takes the running one of that name;
#   2. builds the image with `docker build -f deploy/Dockerfile` and loads it into the node,
#      then checks the node: its containerd's version (with KIND_NODE_IMAGE=local, the one
#      e2e/kind/containerd pins), and that a claim on the default StorageClass `standard`
#      binds, a pod writes to it, and the volume is deleted with the claim;
#   3. installs deploy/helm/dra-driver with e2e/kind/values.yaml (mock GPUs) and waits for the
#      kubelet plugin's ResourceSlices;
#   4. applies deploy/examples/demo/ (a pod placed by the controller, the others by the
#      scheduler) and checks that every pod runs and its container sees a /dev/nvidiaN;
#   5. removes the demo and uninstalls the chart, then runs the cluster test suite
#      (tests/cluster) against the cluster with DRA_DRIVER_E2E_KUBECONFIG. The suite publishes
#      ResourceSlices of gpu.dra-driver.io on the node itself and must not share the node
#      with a running driver of that name (see e2e/README.md), hence the uninstall first;
#   6. deletes the cluster, unless --keep (or --reuse: a cluster it did not create stays).
#
# Options:
#   --keep        keep the cluster (and the driver, if the run stops before the suite).
#   --reuse       use the existing cluster KIND_CLUSTER_NAME instead of creating one.
#   --skip-suite  stop after step 4 and leave the driver installed (implies --keep).
#
# Environment:
#   KIND_CLUSTER_NAME  cluster name; default dra-driver.
#   KIND_NODE_IMAGE    node image; default kind v0.33.0's Kubernetes 1.37.0 image (below).
#                      Any image of Kubernetes 1.37 or newer works with the kind release
#                      that published it or a newer one (kind-config.yaml says how to
#                      use 1.34 to 1.36). "local": no registry at all (what
#                      `make e2e-kind` does): e2e/kind/engine.sh starts Docker's engine and
#                      builds kind, e2e/kind/node-image.sh builds the node image (Kubernetes
#                      of e2e/cluster/go/go.mod), the driver's image comes from
#                      `python -m e2e.cluster.driver_image build` (deploy/Dockerfile on a
#                      Python base from Debian packages, `kind load image-archive`), and
#                      busybox from the rootfs e2e/runtime/ensure_podman.sh makes. Needs root.
#   DRA_DRIVER_IMAGE   image name and tag to build and install; default dra-driver:kind.
#   BUSYBOX_IMAGE      image the demo's pods run, pulled and loaded into the node as
#                      docker.io/local/busybox:dra-e2e (the name the demo uses); default
#                      busybox:1.37. Not used with KIND_NODE_IMAGE=local.
#   HELM               helm binary; default the one on PATH, else e2e/tools/helm.sh builds one
#                      (needs Go).
#   DRA_DRIVER_CACHE   where the cluster's kubeconfig is written (kind/<cluster>.kubeconfig);
#                      default $HOME/.cache/dra-driver. ~/.kube/config is not touched.
#   DRA_DRIVER_E2E_LOCK  a file the cluster suite holds with flock while it runs, for a
#                      machine where cluster suites take turns; default none.
#
# Needs docker, kind (v0.33.0 or newer for the default node image), kubectl and helm (or Go).
# The Python environment for the suite is made with `make setup` if .venv/ is missing.
# Exit status: 0 when every step passed, 1 when one failed (diagnostics printed), 2 on a
# usage error or a missing tool.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly ROOT
readonly HERE="${ROOT}/e2e/kind"
readonly KIND_CONFIG="${HERE}/kind-config.yaml"
readonly KIND_VALUES="${HERE}/values.yaml"
readonly CHART="${ROOT}/deploy/helm/dra-driver"
readonly DOCKERFILE="${ROOT}/deploy/Dockerfile"
readonly DEMO="${ROOT}/deploy/examples/demo"
readonly DEFAULT_NODE_IMAGE="kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5"

readonly CLUSTER="${KIND_CLUSTER_NAME:-dra-driver}"
NODE_IMAGE="${KIND_NODE_IMAGE:-${DEFAULT_NODE_IMAGE}}"
IMAGE="${DRA_DRIVER_IMAGE:-dra-driver:kind}"
local_images=0
if [[ "${NODE_IMAGE}" == local ]]; then
  local_images=1
fi
readonly local_images
readonly BUSYBOX_SOURCE="${BUSYBOX_IMAGE:-busybox:1.37}"
readonly DEMO_BUSYBOX="docker.io/local/busybox:dra-e2e"
readonly KUBECONFIG_FILE="${DRA_DRIVER_CACHE:-${HOME}/.cache/dra-driver}/kind/${CLUSTER}.kubeconfig"

# The chart's names for release "dra-driver" (the chart's fullname helper: a release name
# containing the chart's name is used as it is).
readonly RELEASE="dra-driver"
readonly NAMESPACE="dra-driver"
readonly DRIVER="gpu.dra-driver.io"
readonly PLUGIN="${RELEASE}-kubelet-plugin"
readonly CONTROLLER="${RELEASE}-controller"
readonly DEMO_NAMESPACE="dra-demo"
readonly STORAGE_NAMESPACE="dra-kind-storage"

keep=0
reuse=0
skip_suite=0
created=0
step="start"

log() { printf '[kind-e2e %5ss] %s\n' "${SECONDS}" "$*" >&2; }
usage_error() {
  printf 'e2e/kind/run.sh: error: %s\n' "$*" >&2
  exit 2
}

for arg in "$@"; do
  case "${arg}" in
    --keep) keep=1 ;;
    --reuse) reuse=1 ;;
    --skip-suite) skip_suite=1 keep=1 ;;
    -h | --help)
      sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *) usage_error "unknown argument '${arg}' (see --help)" ;;
  esac
done

if ((local_images)); then
  [[ "$(id -u)" == 0 ]] || usage_error "KIND_NODE_IMAGE=local needs root (Docker's engine, debootstrap)"
  log "KIND_NODE_IMAGE=local: Docker's engine and kind (e2e/kind/engine.sh)"
  kind_dir="$("${HERE}/engine.sh" up)"
  log "building or reusing the node image (e2e/kind/node-image.sh)"
  NODE_IMAGE="$("${HERE}/node-image.sh")"
  # kubectl of the node's Kubernetes version (dra-driver/kind-node:<version>-<key>), built
  # with the node image; the docker client of Debian's package.
  node_version="${NODE_IMAGE##*:}"
  PATH="${kind_dir}:$(dirname "${kind_dir}")/k8s-${node_version%-*}/bin:/usr/bin:${PATH}"
  export PATH
fi
readonly NODE_IMAGE

for tool in docker kind kubectl; do
  command -v "${tool}" >/dev/null || usage_error "${tool} is not on PATH; install it first"
done
if [[ -n "${HELM:-}" ]]; then
  helm_bin="${HELM}"
elif command -v helm >/dev/null; then
  helm_bin="$(command -v helm)"
elif command -v go >/dev/null; then
  log "helm is not on PATH: building it from its Go module with e2e/tools/helm.sh"
  helm_bin="$("${ROOT}/e2e/tools/helm.sh")"
else
  usage_error "neither helm nor go is on PATH; install helm or set HELM"
fi
readonly helm_bin

k() { kubectl --kubeconfig "${KUBECONFIG_FILE}" "$@"; }

diagnostics() {
  log "failed during: ${step}; what the cluster shows:"
  k get nodes -o wide >&2 || true
  k get pods -A -o wide >&2 || true
  k get resourceslices >&2 || true
  k -n "${DEMO_NAMESPACE}" get events --sort-by=.lastTimestamp >&2 || true
  k -n "${NAMESPACE}" logs "daemonset/${PLUGIN}" --tail=40 >&2 || true
  k -n "${NAMESPACE}" logs "deployment/${CONTROLLER}" --tail=40 >&2 || true
}

# The kubelet in a kind node writes a few sysctls that are not namespaced, so they change
# on the host (kind's nodes do this everywhere); they are put back when the run ends.
readonly HOST_SYSCTLS=(vm/overcommit_memory kernel/panic kernel/panic_on_oops)
declare -A host_sysctl_before=()
for name in "${HOST_SYSCTLS[@]}"; do
  host_sysctl_before["${name}"]="$(cat "/proc/sys/${name}" 2>/dev/null || true)"
done
# kind mounts the host's /lib/modules into its nodes; Docker makes the directory where it is
# missing, and it is removed again (when still empty) with the cluster.
lib_modules_missing=0
[[ -e /lib/modules ]] || lib_modules_missing=1
restore_host_sysctls() {
  local name
  for name in "${HOST_SYSCTLS[@]}"; do
    if [[ -n "${host_sysctl_before[${name}]}" && -w "/proc/sys/${name}" &&
      "$(cat "/proc/sys/${name}")" != "${host_sysctl_before[${name}]}" ]]; then
      echo "${host_sysctl_before[${name}]}" >"/proc/sys/${name}" || true
    fi
  done
}

finish() {
  local status=$?
  if ((status != 0 && status != 2)); then
    diagnostics
  fi
  if ((created && !keep)); then
    log "deleting cluster ${CLUSTER} (--keep keeps it)"
    kind delete cluster --name "${CLUSTER}" --kubeconfig "${KUBECONFIG_FILE}" >&2 || true
    restore_host_sysctls
    if ((lib_modules_missing)); then
      rmdir /lib/modules 2>/dev/null || true
    fi
  elif kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
    log "cluster ${CLUSTER} kept: KUBECONFIG=${KUBECONFIG_FILE}; kind delete cluster --name ${CLUSTER}"
  fi
  if ((status == 2)); then
    exit 2
  elif ((status != 0)); then
    log "FAILED (exit ${status})"
    exit 1
  fi
}
trap finish EXIT

# Waits until the command prints something, up to $1 seconds.
wait_for_output() {
  local timeout_s="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout_s))
  until [[ -n "$("$@" 2>/dev/null || true)" ]]; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout_s}s waiting for ${what}"
      return 1
    fi
    sleep 2
  done
}

# Waits until the command prints nothing, up to $1 seconds.
wait_for_no_output() {
  local timeout_s="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout_s))
  while [[ -n "$("$@" 2>/dev/null || true)" ]]; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout_s}s waiting for ${what}"
      return 1
    fi
    sleep 2
  done
}

driver_slices() {
  k get resourceslices --field-selector "spec.driver=${DRIVER}" -o name
}

step="creating the cluster"
mkdir -p "$(dirname "${KUBECONFIG_FILE}")"
if ((reuse)); then
  kind get clusters | grep -qx "${CLUSTER}" || usage_error "--reuse: no kind cluster ${CLUSTER}"
  kind get kubeconfig --name "${CLUSTER}" >"${KUBECONFIG_FILE}"
  log "reusing cluster ${CLUSTER}"
else
  if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
    usage_error "a kind cluster ${CLUSTER} exists already: pass --reuse, or delete it"
  fi
  log "creating cluster ${CLUSTER} from ${NODE_IMAGE}"
  created=1
  kind create cluster --name "${CLUSTER}" --config "${KIND_CONFIG}" --image "${NODE_IMAGE}" \
    --kubeconfig "${KUBECONFIG_FILE}" --wait 120s
fi
# resource.k8s.io/v1 is what the driver speaks; an older node image cannot run it.
if ! k api-versions | grep -qx 'resource.k8s.io/v1'; then
  log "the cluster does not serve resource.k8s.io/v1: use a node image of Kubernetes 1.34+"
  exit 1
fi
node="$(k get nodes -o jsonpath='{.items[0].metadata.name}')"

step="building and loading the image"
if ((local_images)); then
  # deploy/Dockerfile built offline (a Python base from Debian packages, wheels from a
  # directory), checked and saved as an OCI archive that the node's containerd imports.
  if [[ ! -x "${ROOT}/.venv/bin/python" ]]; then
    make -C "${ROOT}" setup
  fi
  built="$(cd "${ROOT}" && .venv/bin/python -m e2e.cluster.driver_image build)"
  IMAGE="${built%%$'\t'*}"
  log "loading ${IMAGE} (${built#*$'\t'})"
  kind load image-archive --name "${CLUSTER}" "${built#*$'\t'}"
  busybox_tar="$("${ROOT}/e2e/runtime/ensure_podman.sh")"
  docker import --change 'CMD ["/bin/sh"]' "${busybox_tar}" "${DEMO_BUSYBOX}" >/dev/null
else
  revision="$(git -C "${ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)"
  log "building ${IMAGE} (revision ${revision})"
  docker build -f "${DOCKERFILE}" --build-arg "GIT_REVISION=${revision}" -t "${IMAGE}" "${ROOT}"
  log "image reports: $(docker run --rm "${IMAGE}" --version)"
  kind load docker-image --name "${CLUSTER}" "${IMAGE}"
  docker pull --quiet "${BUSYBOX_SOURCE}" >/dev/null
  docker tag "${BUSYBOX_SOURCE}" "${DEMO_BUSYBOX}"
fi
readonly IMAGE
kind load docker-image --name "${CLUSTER}" "${DEMO_BUSYBOX}"

step="checking the node's container runtime"
runtime_version="$(docker exec "${node}" crictl version | awk '$1 == "RuntimeVersion:" {print $2}')"
log "the node's containerd: ${runtime_version} ($(docker exec "${node}" runc --version | head -n 1))"
if ((local_images)); then
  pinned_containerd="$(awk -v m=github.com/containerd/containerd/v2 \
    '{for (i = 1; i < NF; i++) if ($i == m) {print $(i + 1); exit}}' "${HERE}/containerd/go.mod")"
  if [[ "${runtime_version#v}" != "${pinned_containerd#v}" ]]; then
    log "the node runs containerd ${runtime_version}, e2e/kind/containerd/go.mod pins ${pinned_containerd}"
    exit 1
  fi
fi

# The default StorageClass: a claim on it binds once a pod uses it, and the pod writes to it.
step="checking the default StorageClass (standard)"
storage_check() {
  k apply -f - <<EOF_STORAGE
apiVersion: v1
kind: Namespace
metadata:
  name: ${STORAGE_NAMESPACE}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: ${STORAGE_NAMESPACE}
spec:
  storageClassName: standard
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 16Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: writer
  namespace: ${STORAGE_NAMESPACE}
spec:
  restartPolicy: Never
  containers:
    - name: writer
      image: ${DEMO_BUSYBOX}
      imagePullPolicy: Never
      command: [sh, -c, 'echo written-by-pod >/data/file && cat /data/file']
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: data
EOF_STORAGE
  k -n "${STORAGE_NAMESPACE}" wait --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout=180s
  local phase volume path
  phase="$(k -n "${STORAGE_NAMESPACE}" get pvc data -o 'jsonpath={.status.phase}')"
  volume="$(k -n "${STORAGE_NAMESPACE}" get pvc data -o 'jsonpath={.spec.volumeName}')"
  path="$(k get pv "${volume}" -o 'jsonpath={.spec.hostPath.path}{.spec.local.path}')"
  if [[ "${phase}" != Bound || "$(k -n "${STORAGE_NAMESPACE}" logs writer)" != written-by-pod ]]; then
    log "claim ${STORAGE_NAMESPACE}/data is ${phase:-not bound}, or the pod did not write to it"
    return 1
  fi
  if [[ "$(docker exec "${node}" cat "${path}/file")" != written-by-pod ]]; then
    log "the volume ${volume} has no file the pod wrote at ${path} on the node"
    return 1
  fi
  log "claim ${STORAGE_NAMESPACE}/data bound to ${volume} (${path} on the node); the pod wrote to it"
  k delete namespace "${STORAGE_NAMESPACE}" --wait --timeout=180s
  # reclaimPolicy Delete: the provisioner's helper pod removes the directory, then the volume.
  wait_for_no_output 120 "the volume ${volume} to be deleted" k get pv "${volume}" -o name
}
storage_check

step="installing the chart"
log "installing ${CHART} as ${RELEASE} in namespace ${NAMESPACE} (mock GPUs)"
"${helm_bin}" --kubeconfig "${KUBECONFIG_FILE}" upgrade --install "${RELEASE}" "${CHART}" \
  --namespace "${NAMESPACE}" --create-namespace \
  --values "${KIND_VALUES}" \
  --set-string "image.repository=${IMAGE%:*}" --set-string "image.tag=${IMAGE##*:}" \
  --wait --timeout 5m
k -n "${NAMESPACE}" rollout status "daemonset/${PLUGIN}" --timeout=180s
k -n "${NAMESPACE}" rollout status "deployment/${CONTROLLER}" --timeout=180s
wait_for_output 120 "the kubelet plugin's ResourceSlices" driver_slices
log "published: $(driver_slices | tr '\n' ' ')"

step="running the demo"
k apply -f "${DEMO}/00-namespace.yaml" -f "${DEMO}/controller-placed.yaml"
# The gated pod first, the others once it is bound: the controller and the scheduler
# allocate independently and could otherwise pick the same free GPU (deploy/examples/demo).
wait_for_output 120 "the controller to place pod ${DEMO_NAMESPACE}/controller-placed" \
  k -n "${DEMO_NAMESPACE}" get pod controller-placed -o 'jsonpath={.spec.nodeName}'
# Every other manifest of the folder; the gated pod is not applied again (a gate cannot be
# added back to a pod whose gate the controller removed).
for manifest in "${DEMO}"/*.yaml; do
  case "${manifest##*/}" in
    00-namespace.yaml | controller-placed.yaml) ;;
    *) k apply -f "${manifest}" ;;
  esac
done
k -n "${DEMO_NAMESPACE}" wait --for=condition=Ready pod --all --timeout=180s
for pod in $(k -n "${DEMO_NAMESPACE}" get pods -o 'jsonpath={.items[*].metadata.name}'); do
  seen="$(k -n "${DEMO_NAMESPACE}" logs "${pod}" | sed -n '/^--- dev$/,/^--- env$/p' \
    | grep -E '^nvidia[0-9]+$' | tr '\n' ' ' || true)"
  if [[ -z "${seen}" ]]; then
    log "pod ${DEMO_NAMESPACE}/${pod} runs but its container sees no /dev/nvidiaN"
    exit 1
  fi
  log "pod ${DEMO_NAMESPACE}/${pod}: sees ${seen}"
done
placed="$(k -n "${DEMO_NAMESPACE}" get resourceclaims \
  -o "jsonpath={.items[*].metadata.annotations.gpu\.dra-driver\.io/placed-for}")"
if [[ -z "${placed}" ]]; then
  log "no claim in ${DEMO_NAMESPACE} carries ${DRIVER}/placed-for: the controller placed nothing"
  exit 1
fi
log "placed by the controller for: ${placed}"

if ((skip_suite)); then
  step="done"
  log "PASSED (demo only; the driver and the demo stay installed)"
  exit 0
fi

step="uninstalling the driver before the suite"
k delete namespace "${DEMO_NAMESPACE}" --wait --timeout=180s
"${helm_bin}" --kubeconfig "${KUBECONFIG_FILE}" uninstall "${RELEASE}" --namespace "${NAMESPACE}" \
  --wait --timeout 3m
# The kubelet removes the slices of a plugin that is gone (within about 30 s).
wait_for_no_output 120 "the driver's ResourceSlices to be removed" driver_slices

step="running the cluster suite"
if [[ ! -x "${ROOT}/.venv/bin/python" ]]; then
  make -C "${ROOT}" setup
fi
log "pytest tests/cluster against ${CLUSTER} (node ${node})"
(
  cd "${ROOT}"
  suite=(.venv/bin/python -m pytest tests/cluster -ra)
  if [[ -n "${DRA_DRIVER_E2E_LOCK:-}" ]]; then
    log "waiting for ${DRA_DRIVER_E2E_LOCK} (DRA_DRIVER_E2E_LOCK)"
    suite=(flock "${DRA_DRIVER_E2E_LOCK}" "${suite[@]}")
  fi
  DRA_DRIVER_E2E_KUBECONFIG="${KUBECONFIG_FILE}" DRA_DRIVER_E2E_NODE="${node}" "${suite[@]}"
)
step="done"
log "PASSED"
