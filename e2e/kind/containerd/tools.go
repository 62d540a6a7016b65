//go:build tools

// Package tools pins the containerd module e2e/kind/node-image.sh builds containerd, ctr
// and containerd-shim-runc-v2 from for the kind node image (kind v0.33.0 builds the same
// version from source: its images/base/Dockerfile, CONTAINERD_VERSION).
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
