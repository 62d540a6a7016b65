"""GPU discovery, health events and dynamic MIG through NVML (``nvidia-ml-py``).

The only package that imports pynvml, in one place
(:func:`~kubelet_plugin.nvml.library.load_pynvml`); the rest of the plugin
takes a backend, never the bindings.
:class:`NvmlBackend` (:mod:`~kubelet_plugin.nvml.backend`) implements
:class:`~dra_driver.discovery.model.DiscoveryBackend`:

- ``discover()`` (:mod:`~kubelet_plugin.nvml.discovery`) reads every property
  the ResourceSlices publish, normalised by
  :mod:`dra_driver.discovery.normalize`: index, UUID, product name, brand,
  architecture, CUDA compute capability, driver and CUDA driver versions as
  strict semver, total memory, PCI bus ID as ``0000:3b:00.0``, minor number,
  NUMA node (NVML, else sysfs), PCIe root (sysfs), MIG mode, MIG profiles
  with their placements, the MIG devices that exist (static MIG), and the
  NVLink topology (peers, island, fabric clique: :mod:`~kubelet_plugin.nvml.topology`).
- ``mig_manager`` (:class:`NvmlMigManager`, :mod:`~kubelet_plugin.nvml.mig`)
  creates MIG devices at a placement
  (``nvmlDeviceCreateGpuInstanceWithPlacement``, then one compute instance
  spanning the GPU instance) and destroys them, reading the capability device
  minors from ``/proc/driver/nvidia/capabilities``.
- ``wait_health_event()`` (:mod:`~kubelet_plugin.nvml.events`) waits on an
  NVML event set for XID critical errors, single and double bit ECC errors;
  ``GpuIsLost`` from the wait is a ``gpu-lost`` event for every GPU.

Failure policy: a property every slice needs (UUID, name, minor number, PCI
bus ID, compute capability, versions) that NVML cannot read fails the whole
discovery with a DiscoveryError naming the GPU and the call, because a wrong
inventory is worse than none. Optional properties (memory on coherent
systems, NUMA node, PCIe root, MIG data, NVLink topology) are left out with a
log line.

The pynvml module is a constructor parameter (the real one by default), so
tests hand in a fake module object instead of patching globals.
"""

from kubelet_plugin.nvml.backend import NvmlBackend
from kubelet_plugin.nvml.library import NVML_LIBRARY, load_pynvml, preload_library
from kubelet_plugin.nvml.mig import NvmlMigManager

__all__ = ["NVML_LIBRARY", "NvmlBackend", "NvmlMigManager", "load_pynvml", "preload_library"]
