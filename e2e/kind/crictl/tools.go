//go:build tools

// Package tools pins the cri-tools module e2e/kind/node-image.sh builds the kind node image's
// crictl from (kind v0.33.0 builds the same version: its images/base/Dockerfile,
// CRICTL_VERSION).
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
