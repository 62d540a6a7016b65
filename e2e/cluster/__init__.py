"""The local Kubernetes cluster the cluster tests run on (tier 3).

``e2e/cluster/build.sh`` builds or reuses the binaries; :class:`LocalCluster`
starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
containerd and a kubelet from them and tears them down; ``python -m
e2e.cluster up|down|status`` does the same by hand. See e2e/README.md.
"""

from e2e.cluster.errors import ClusterError
from e2e.cluster.harness import DEFAULT_NODE_NAME, LocalCluster, build_binaries
from e2e.cluster.node import BUSYBOX_IMAGE

__all__ = ["BUSYBOX_IMAGE", "DEFAULT_NODE_NAME", "ClusterError", "LocalCluster", "build_binaries"]
