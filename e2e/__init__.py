"""End-to-end material: the local Kubernetes cluster the cluster tests run on."""
