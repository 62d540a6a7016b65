"""CDI spec building: the per-claim Container Device Interface spec a container runtime reads.

One spec per prepared claim, kind ``<driver name>/gpu`` (``gpu.dra-driver.io/gpu``),
file ``<driver name>-<claim uid>.json`` in the CDI root. The layout follows
NVIDIA's DRA driver (spec/cdi.md §6):

- spec-level ``containerEdits`` (applied once when any device of the spec is
  requested): the control device nodes that exist on the host
  (``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``,
  ``/dev/nvidia-modeset``), read-only bind mounts of the driver's libraries,
  binaries and firmware found under the driver root, ``NVIDIA_VISIBLE_DEVICES=void``
  (as NVIDIA's driver writes it: a runtime hook must not add GPUs from it; the
  container's GPUs are the device nodes CDI injects), the CUDA MPS client settings,
  the pipe and log directories of the MPS daemons of the claim's MPS GPUs where the
  plugin runs them (:mod:`.mps`), and an ``update-ldcache`` hook where a hook binary
  is configured;
- one device per allocated GPU, named ``<claim uid>-<device>`` (``gpu-<index>``), with
  its ``/dev/nvidia<minor>`` node and ``DRA_GPU_<key>_*`` variables describing it
  (``UUID``, ``SHARING_STRATEGY``, ...; ``<key>`` is the published device name without
  ``gpu-``, :func:`gpu_env_key`, so a container given devices of several claims, or a
  share of a claim's devices, sees exactly its own devices' variables);
  a MIG device (``<claim uid>-gpu-<minor>-mig-...``) gets its parent's
  ``/dev/nvidia<minor>`` and the ``/dev/nvidia-caps/nvidia-cap<N>`` nodes of its
  GPU and compute instance, and its ``MIG-...`` UUID stands where a GPU's would;
- where the plugin writes device metadata files (:mod:`dra_driver.device_metadata`), one
  device per request, ``<claim uid>-metadata-<request>``, that bind-mounts the request's
  file read-only at its path under ``/var/run/kubernetes.io/dra-device-attributes``.

``cdiVersion`` is the lowest version the content needs (:func:`minimum_cdi_version`),
so that older runtimes still load the file: containerd 1.7 reads up to 0.8.0,
podman 4.3 up to 0.5.0. The model cannot express the fields that need 0.6.0 or
later (annotations, ``intelRdt``, ``additionalGids``, ``netDevices``), so the
version written is at most 0.5.0.

Everything here is pure: what exists on the host is passed in as
:class:`HostFiles` (the kubelet plugin scans for it).

The spec model (names, schema, versions) is :mod:`.model`, what the host offers
:mod:`.host`, and the building of a claim's spec :mod:`.spec`; the names below
are the package's public surface.
"""

from dra_driver.cdi.host import (
    CONTROL_DEVICE_NODES,
    DRIVER_BINARIES,
    DRIVER_BINARY_DIRS,
    DRIVER_LIBRARIES,
    DRIVER_LIBRARY_DIRS,
    FIRMWARE_DIR,
    PERSISTENCED_SOCKET,
    HostFiles,
    is_driver_file,
    select_driver_files,
)
from dra_driver.cdi.model import (
    CDI_CLASS,
    MAX_CDI_VERSION,
    CdiDevice,
    CdiSpec,
    ContainerEdits,
    DeviceNode,
    Hook,
    Mount,
    cdi_device_id,
    cdi_device_name,
    cdi_kind,
    encode_cdi_spec,
    is_valid_cdi_class,
    is_valid_cdi_device_name,
    is_valid_cdi_vendor,
    minimum_cdi_version,
    spec_file_name,
)
from dra_driver.cdi.spec import (
    FILE_MOUNT_OPTIONS,
    MOUNT_OPTIONS,
    FileDevice,
    SharingSettings,
    SpecDevice,
    build_cdi_spec,
    gpu_env_key,
)

__all__ = [
    "CDI_CLASS",
    "CONTROL_DEVICE_NODES",
    "DRIVER_BINARIES",
    "DRIVER_BINARY_DIRS",
    "DRIVER_LIBRARIES",
    "DRIVER_LIBRARY_DIRS",
    "FILE_MOUNT_OPTIONS",
    "FIRMWARE_DIR",
    "MAX_CDI_VERSION",
    "MOUNT_OPTIONS",
    "PERSISTENCED_SOCKET",
    "CdiDevice",
    "CdiSpec",
    "ContainerEdits",
    "DeviceNode",
    "FileDevice",
    "Hook",
    "HostFiles",
    "Mount",
    "SharingSettings",
    "SpecDevice",
    "build_cdi_spec",
    "cdi_device_id",
    "cdi_device_name",
    "cdi_kind",
    "encode_cdi_spec",
    "gpu_env_key",
    "is_driver_file",
    "is_valid_cdi_class",
    "is_valid_cdi_device_name",
    "is_valid_cdi_vendor",
    "minimum_cdi_version",
    "select_driver_files",
    "spec_file_name",
]
