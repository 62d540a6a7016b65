#!/usr/bin/env bash
# Render deploy/manifests/dra-driver.yaml from the Helm chart with its default values, for
# users without Helm (release dra-driver in namespace dra-driver).
#
# Usage: scripts/render_manifests.sh [--check]
#
#   (no option)  write deploy/manifests/dra-driver.yaml.
#   --check      write nothing; exit 1 when the file differs from a fresh rendering.
#
# helm comes from e2e/tools/helm.sh (built from its Go module once, then cached); set HELM
# to use another binary. tests/unit/test_deploy_chart.py fails when the file drifts.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly CHART="${ROOT}/deploy/helm/dra-driver"
readonly OUTPUT="${ROOT}/deploy/manifests/dra-driver.yaml"
readonly RELEASE=dra-driver NAMESPACE=dra-driver
readonly HEADER="# Rendered from deploy/helm/dra-driver with its default values by scripts/render_manifests.sh
# (release ${RELEASE}, namespace ${NAMESPACE}); do not edit: change the chart and run it again.
# Apply deploy/manifests/namespace.yaml first."

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *)
    printf 'scripts/render_manifests.sh: unknown option %s\nusage: scripts/render_manifests.sh [--check]\n' "$1" >&2
    exit 2
    ;;
esac

helm="${HELM:-$("${ROOT}/e2e/tools/helm.sh")}"
rendered="$(mktemp)"
trap 'rm -f "${rendered}"' EXIT
{
  printf '%s\n' "${HEADER}"
  "${helm}" template "${RELEASE}" "${CHART}" --namespace "${NAMESPACE}"
} >"${rendered}"

if "${check}"; then
  if ! diff -u "${OUTPUT}" "${rendered}" >&2; then
    printf 'scripts/render_manifests.sh: %s is out of date; run scripts/render_manifests.sh\n' "${OUTPUT#"${ROOT}"/}" >&2
    exit 1
  fi
  exit 0
fi
cp "${rendered}" "${OUTPUT}"
printf '%s\n' "${OUTPUT}"
