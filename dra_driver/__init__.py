"""The driver's pure core: what to publish, allocate and prepare, computed without I/O.

CEL selectors, the allocator, ResourceSlice planning, claim preparation, CDI specs, manifests
and the GPU model; no Kubernetes client, gRPC or NVML here (import-linter enforces it).
"""

__version__ = "0.1.0"
