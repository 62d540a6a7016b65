"""The local Kubernetes cluster the cluster tests run on (tier 3): :class:`LocalCluster`
builds or reuses the binaries, starts a control plane and one node with a real kubelet, and
tears them down; ``python -m e2e.cluster up|down|status`` does it by hand (e2e/README.md)."""

from e2e.cluster.binaries import build_binaries
from e2e.cluster.errors import ClusterError
from e2e.cluster.harness import DEFAULT_NODE_NAME, LocalCluster
from e2e.cluster.node import BUSYBOX_IMAGE

__all__ = ["BUSYBOX_IMAGE", "DEFAULT_NODE_NAME", "ClusterError", "LocalCluster", "build_binaries"]
