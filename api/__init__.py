"""Types of the DRA GPU driver: resource.k8s.io/v1 models, quantities, versions, errors.

This package does no I/O and imports no Kubernetes client, gRPC or NVML module.
"""
