//go:build tools

// Package tools pins the local-path-provisioner module e2e/kind/node-image.sh builds the
// node image's default storage provisioner from. kind v0.33.0 ships v0.0.34; the Go module
// proxy serves v0.0.30 as its newest (e2e/kind/README.md).
package tools

import _ "github.com/rancher/local-path-provisioner"
