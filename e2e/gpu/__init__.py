"""Checks on a machine with real NVIDIA GPUs of what the test suite can only fake (NVML
discovery, slices, health events, the kubelet plugin): ``python -m e2e.gpu.check``."""
