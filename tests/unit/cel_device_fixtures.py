"""Realistic CelDevices for the selector tests: an NVIDIA H100, a MIG slice, a Tesla T4
and devices of the spec's example driver ``gpu.example.com``."""

from __future__ import annotations

from api.quantity import Quantity
from api.semver import Semver
from dra_driver.cel import CelDevice, build_cel_device

NVIDIA = "gpu.nvidia.com"
EXAMPLE = "gpu.example.com"


def _nvidia_gpu() -> CelDevice:
    return build_cel_device(
        NVIDIA,
        {
            "type": "gpu",
            "uuid": "GPU-8a7e5cc2-3fb9-4c0b-a1e3-bd1cf9d4e6f1",
            "productName": "NVIDIA H100 80GB HBM3",
            "brand": "Nvidia",
            "architecture": "Hopper",
            "cudaComputeCapability": Semver.parse("9.0.0"),
            "driverVersion": Semver.parse("550.54.15"),
            "cudaDriverVersion": Semver.parse("12.4.0"),
            "index": 0,
            "resource.kubernetes.io/pciBusID": "0000:3b:00.0",
            "resource.kubernetes.io/pcieRoot": "pci0000:30",
        },
        {"memory": Quantity.parse("80Gi")},
    )


def _nvidia_mig() -> CelDevice:
    # A MIG device publishes no uuid-like pciBusID and no architecture here.
    return build_cel_device(
        NVIDIA,
        {
            "type": "mig",
            "uuid": "MIG-0f2d9c1e-8f43-5d2a-9e62-4b7c1a9d3e55",
            "productName": "NVIDIA A100-SXM4-40GB",
            "profile": "1g.10gb",
            "parentIndex": 0,
            "cudaComputeCapability": Semver.parse("8.0.0"),
            "driverVersion": Semver.parse("535.104.5"),
        },
        {"memory": Quantity.parse("9728Mi")},
    )


def _nvidia_t4() -> CelDevice:
    return build_cel_device(
        NVIDIA,
        {
            "type": "gpu",
            "productName": "Tesla T4",
            "cudaComputeCapability": Semver.parse("7.5.0"),
            "driverVersion": Semver.parse("550.0.0"),
            "index": 1,
            "resource.kubernetes.io/pciBusID": "0000:af:00.0",
        },
        {"memory": Quantity.parse("16Gi")},
    )


def _example_gpu(index: int, allow_multiple: bool = False) -> CelDevice:
    return build_cel_device(
        EXAMPLE,
        {
            "index": index,
            "uuid": f"gpu-{index:04d}",
            "model": "LATEST-GPU-MODEL",
            "driverVersion": Semver.parse("1.0.0"),
        },
        {"memory": Quantity.parse("80Gi"), "compute": Quantity.parse("100")},
        allow_multiple,
    )


GPU = _nvidia_gpu()
MIG = _nvidia_mig()
T4 = _nvidia_t4()
EXAMPLE_0 = _example_gpu(0)
EXAMPLE_2 = _example_gpu(2)
SHARED = _example_gpu(1, allow_multiple=True)
