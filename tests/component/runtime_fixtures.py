"""Real container runtimes for the CDI tests: podman 4.3, and containerd 1.7 through its CRI.

Both run as root on this host, with every piece of state they can be told
about in a private temporary directory, and both are torn down so that nothing
is left running, mounted or registered afterwards:

- :func:`podman_session`: podman from Debian (``e2e/runtime/ensure_podman.sh``
  installs it when missing), private ``--root``/``--runroot``/``--tmpdir``, its
  own ``containers.conf`` and ``storage.conf`` (ulimits it may set without
  CAP_SYS_RESOURCE, runc, cgroupfs, events to a file), a busybox image imported from a cached
  rootfs tarball. Podman 4.3 has no setting for the CDI directories: it reads
  specs only from ``/etc/cdi`` and ``/var/run/cdi`` (:data:`PODMAN_CDI_ROOT`).
- :func:`containerd_session`: the containerd 1.7 that ``e2e/cluster/build.sh``
  caches under ``$DRA_DRIVER_CACHE/k8s-*/bin``, with ``enable_cdi`` on and a
  private CDI directory, driven over its CRI socket like the kubelet does.

What the runtimes put outside the private directory is undone by name:
containers' cgroups live under a parent cgroup unique to the session, spec
files carry a name unique to the run; ``/var/lib/containers`` (podman's
blob-info cache, which podman 4.3 always writes there) is removed when the
session created it; ``/var/run/cdi`` and ``/run/containerd`` (containerd 1.7's
shim sockets) only when the session created them, and only what is empty.

Layout: :mod:`runtime_host` (container output, host state and its clean-up),
:mod:`runtime_podman` and :mod:`runtime_containerd` (one runtime each); this module is
what the tests import.
"""

from __future__ import annotations

from runtime_containerd import ContainerdRuntime, containerd_session
from runtime_host import (
    ContainerOutput,
    owned_cdi_files,
    parse_char_devices,
    parse_env,
    replace_with_char_devices,
)
from runtime_podman import PODMAN_CDI_ROOT, Podman, podman_session

__all__ = [
    "PODMAN_CDI_ROOT",
    "ContainerOutput",
    "ContainerdRuntime",
    "Podman",
    "containerd_session",
    "owned_cdi_files",
    "parse_char_devices",
    "parse_env",
    "podman_session",
    "replace_with_char_devices",
]
