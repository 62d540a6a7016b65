"""Where the kubelet plugin's sockets go (spec/kubelet-plugin.md §1).

Light on purpose: the settings (imported at every CLI start) and the gRPC
server share these names, and the settings must not pull gRPC in.

With a pod UID (rolling updates with surge) the names carry the UID's first
:data:`INSTANCE_LENGTH` hexadecimal digits rather than all 32: enough to tell
the two pods of a node apart (a random UUID's 48 bits), and short enough for a
socket path within the unix limit of 107 bytes under a long kubelet directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["INSTANCE_LENGTH", "dra_socket_path", "instance_token", "registration_socket_path"]

INSTANCE_LENGTH: Final = 12


def instance_token(pod_uid: str) -> str:
    """The part of ``pod_uid`` that names a plugin instance's sockets.

    Only ASCII letters and digits are kept (a pod UID is a UUID: its hex digits),
    so a UID from the environment can never put a ``/`` or ``..`` in a socket path.
    """
    kept = "".join(c for c in pod_uid.lower() if c.isascii() and c.isalnum())
    return kept[:INSTANCE_LENGTH]


def registration_socket_path(
    registry_dir: Path, driver_name: str, pod_uid: str | None = None
) -> Path:
    """The file the kubelet's plugin watcher finds: ``<registry dir>/<driver>-reg.sock``.

    With the plugin pod's UID (rolling updates) ``<driver>-<instance>-reg.sock``
    (:func:`instance_token`), so that the old and the new pod of a node register
    side by side.
    """
    if pod_uid:
        return registry_dir / f"{driver_name}-{instance_token(pod_uid)}-reg.sock"
    return registry_dir / f"{driver_name}-reg.sock"


def dra_socket_path(plugins_dir: Path, driver_name: str, pod_uid: str | None = None) -> Path:
    """The endpoint the kubelet dials: ``<plugins dir>/<driver>/dra.sock``, or
    ``dra-<instance>.sock`` with the plugin pod's UID (rolling updates)."""
    name = f"dra-{instance_token(pod_uid)}.sock" if pod_uid else "dra.sock"
    return plugins_dir / driver_name / name
