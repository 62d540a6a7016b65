"""Where the kubelet plugin's sockets go (spec/kubelet-plugin.md §1).

Light on purpose: the settings (imported at every CLI start) and the gRPC
server share these names, and the settings must not pull gRPC in.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["dra_socket_path", "registration_socket_path"]


def registration_socket_path(
    registry_dir: Path, driver_name: str, instance: str | None = None
) -> Path:
    """The file the kubelet's plugin watcher finds: ``<registry dir>/<driver>-reg.sock``.

    With ``instance`` (the pod UID, for rolling updates: spec/kubelet-plugin.md §1)
    ``<driver>-<instance>-reg.sock``, so that the old and the new plugin pod of a
    node register side by side.
    """
    name = f"{driver_name}-{instance}-reg.sock" if instance else f"{driver_name}-reg.sock"
    return registry_dir / name


def dra_socket_path(plugins_dir: Path, driver_name: str, instance: str | None = None) -> Path:
    """The endpoint the kubelet dials: ``<plugins dir>/<driver>/dra.sock``, or
    ``dra-<instance>.sock`` with an instance (the pod UID, for rolling updates)."""
    name = f"dra-{instance}.sock" if instance else "dra.sock"
    return plugins_dir / driver_name / name
