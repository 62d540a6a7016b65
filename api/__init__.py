"""The bottom layer, types only: ``resource.k8s.io/v1`` models and the API server's validation,
the driver's ``GpuConfig``, quantities, semver, the checkpoint schema, the error tree and the
exit codes. No I/O; no Kubernetes client, gRPC or NVML (see docs/architecture.md)."""
