"""A device plugin serving this node's GPUs: found, reported, and the driver stepping aside.

Where a device plugin (NVIDIA's k8s-device-plugin, say) advertises GPUs on a node, the
kube-scheduler serves pods asking for that extended resource (``nvidia.com/gpu: 1``) from
the device plugin, not from DRA: a node whose allocatable for the name is non-zero is the
device plugin's (KEP-5004). A ResourceClaim could still be given the same GPUs from this
driver's slices: two allocators handing out one GPU. So, by default
(``--device-plugin-coexistence refuse``), while a device plugin serves GPUs on the node the
plugin publishes its pool with no device, and publishes them again once it is gone.
``--device-plugin-coexistence publish`` keeps publishing (the admin splits the GPUs
between the two some other way, e.g. by the device plugin's own device list).

What counts as a device plugin serving GPUs (either is enough):

- the Node's ``status.allocatable`` has a resource matching ``--device-plugin-resources``
  (shell patterns; default ``nvidia.com/gpu``, ``nvidia.com/gpu.shared``,
  ``nvidia.com/mig-*``) with a non-zero quantity: what the scheduler decides by. (Not
  ``capacity``: a stopped device plugin's devices stay there, unhealthy, for 5 minutes
  while allocatable is already 0.)
- the kubelet's device-plugin directory (``--device-plugins-dir``) holds such a plugin's
  socket, named as the device plugin API names them: ``nvidia.com/gpu`` registers as
  ``nvidia-gpu.sock`` (the resource name's first domain label, ``-``, the name). This
  catches a plugin that registered before the Node's status says so. A directory that is
  not mounted (absent) only loses this signal.

Checked before the first publish and every ``interval_s`` seconds after. Each change is
logged once (warning when found, info when gone), recorded as an Event on the Node
(``DevicePluginDetected`` / ``DevicePluginGone``) and in the gauge
``dra_driver_device_plugin_detected``. Claims already prepared stay prepared: only the
published devices go, so nothing new is allocated here.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent_kit.events import EventRecorder, EventType, ObjectRef
from agent_kit.kube import ApiError, ClusterClient
from api.quantity import parse_quantity
from kubelet_plugin.settings.model import (
    DEFAULT_DEVICE_PLUGIN_RESOURCES,
    DEFAULT_DEVICE_PLUGINS_DIR,
)

__all__ = ["DevicePluginGuard", "socket_pattern"]

log = logging.getLogger(__name__)

#: The ``source.component`` of the plugin's Events.
COMPONENT: Final = "dra-driver-kubelet-plugin"


def socket_pattern(resource_pattern: str) -> str:
    """The socket name a device plugin serving ``resource_pattern`` registers with:
    ``nvidia.com/mig-*`` -> ``nvidia-mig-*.sock``."""
    domain, _, name = resource_pattern.partition("/")
    return f"{domain.split('.', 1)[0]}-{name}.sock"


@dataclass(frozen=True, slots=True)
class Finding:
    """What shows a device plugin serving GPUs here."""

    resources: tuple[str, ...]
    """``name=quantity`` of each matching non-zero resource of the Node."""
    sockets: tuple[str, ...]

    def describe(self) -> str:
        parts = []
        if self.resources:
            parts.append(f"the Node's allocatable has {', '.join(self.resources)}")
        if self.sockets:
            parts.append(f"device plugin sockets {', '.join(self.sockets)}")
        return " and ".join(parts)


class DevicePluginGuard:
    """Watches for a device plugin on ``node_name`` and tells ``on_change`` (see the module
    docstring): called with a description when one is found, with None when it is gone."""

    def __init__(
        self,
        client: ClusterClient,
        *,
        node_name: str,
        resources: Sequence[str] = DEFAULT_DEVICE_PLUGIN_RESOURCES,
        sockets_dir: Path | None = DEFAULT_DEVICE_PLUGINS_DIR,
        on_change: Callable[[str | None], None],
        refuse: bool = True,
        events: EventRecorder | None = None,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.resources = tuple(resources)
        self.sockets_dir = sockets_dir
        self.on_change = on_change
        self.refuse = refuse
        self.events = events
        self.detected: str | None = None
        self._node_uid = ""

    def _matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.resources)

    def _from_node(self) -> tuple[str, ...]:
        node = self.client.get("nodes", self.node_name)
        self._node_uid = str((node.get("metadata") or {}).get("uid") or "")
        status: dict[str, Any] = node.get("status") or {}
        found: dict[str, str] = {}
        for name, value in (status.get("allocatable") or {}).items():
            if not self._matches(name):
                continue
            try:
                nonzero = bool(parse_quantity(str(value)))
            except ValueError:
                nonzero = True  # the kubelet wrote it: it advertises something
            if nonzero:
                found[name] = str(value)
        return tuple(f"{name}={value}" for name, value in sorted(found.items()))

    def _from_sockets(self) -> tuple[str, ...]:
        directory = self.sockets_dir
        if directory is None:
            return ()
        patterns = [socket_pattern(p) for p in self.resources]
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            return ()  # not mounted, or not there: the Node's status still tells
        return tuple(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))

    def check(self) -> str | None:
        """One look: the description of the device plugin found, or None.

        Raises ApiError when the Node cannot be read (the previous state then stands).
        """
        finding = Finding(self._from_node(), self._from_sockets())
        if not (finding.resources or finding.sockets):
            return None
        return finding.describe()

    def update(self) -> None:
        """Check once and act on a change; an unreadable Node keeps the previous state."""
        try:
            found = self.check()
        except ApiError as err:
            log.warning("cannot read Node %s to look for a device plugin: %s", self.node_name, err)
            return
        if found == self.detected:
            return
        self.detected = found
        if found is not None:
            if self.refuse:
                message = (
                    f"a device plugin serves GPUs on this node ({found}); this driver publishes "
                    "no device here while it does, so no GPU is handed out twice. Remove the "
                    "device plugin from the node, or set --device-plugin-coexistence publish "
                    "(chart: kubeletPlugin.devicePluginCoexistence) if the two are given "
                    "different GPUs"
                )
            else:
                message = (
                    f"a device plugin serves GPUs on this node ({found}); this driver publishes "
                    "its devices anyway (--device-plugin-coexistence publish): make sure the "
                    "two are given different GPUs, or a GPU may be handed out twice"
                )
            log.warning("node %s: %s", self.node_name, message)
            self._event("Warning", "DevicePluginDetected", message)
        else:
            message = "no device plugin serves GPUs on this node any more"
            if self.refuse:
                message += ": this driver publishes its devices again"
            log.info("node %s: %s", self.node_name, message)
            self._event("Normal", "DevicePluginGone", message)
        self.on_change(found)

    def _event(self, event_type: EventType, reason: str, message: str) -> None:
        if self.events is None:
            return
        # Events about a Node (cluster-scoped) go to the default namespace, as the kubelet's.
        ref = ObjectRef("Node", "v1", "default", self.node_name, self._node_uid)
        self.events.emit(ref, event_type, reason, message)

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """:meth:`update` every ``interval_s`` seconds until ``stop`` is set."""
        while not stop.wait(interval_s):
            self.update()
