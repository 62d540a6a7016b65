//go:build tools

// Package tools pins the runc module e2e/kind/node-image.sh builds the kind node image's runc
// from (kind v0.33.0 builds the same version: its images/base/Dockerfile, RUNC_VERSION).
package tools

import _ "github.com/opencontainers/runc"
