"""The driver's pure core: CEL selectors, the allocator, manifests, the CLI.

No Kubernetes client, gRPC or NVML imports here (import-linter enforces it).
"""

__version__ = "0.1.0"
