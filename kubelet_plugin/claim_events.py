"""Events on the ResourceClaims the plugin holds devices for: what their users should know.

``kubectl describe resourceclaim`` (and ``kubectl get events``) then tells a claim's
owner, without access to the node, that:

- ``PrepareFailed`` (Warning): the plugin could not prepare the claim, with its answer to
  the kubelet (the kubelet retries; the pod waits in ContainerCreating meanwhile);
- ``DeviceTainted`` (Warning): a device the claim holds got health taints (or other
  ones), named with their effects: NoExecute means its pods are evicted;
- ``DeviceRecovered`` (Normal): the device has no health taint any more.

Through :class:`~agent_kit.events.EventRecorder`: rate-limited per claim and reason,
written from a thread of their own, never raising. The chart grants events create and
patch.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent_kit.events import EventRecorder, ObjectRef
from agent_kit.kube import ClusterClient
from api.checkpoint import DeviceRecord
from api.resource_v1 import DeviceTaint
from kubelet_plugin.health.notices import COMPONENT
from kubelet_plugin.node_driver import ClaimRef

__all__ = ["ClaimEvents", "describe_taints"]


def describe_taints(taints: Sequence[DeviceTaint]) -> str:
    """``key=value:Effect`` for each taint, ``; ``-separated."""
    return "; ".join(f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in taints)


class ClaimEvents:
    """The claim Events of the plugin on node ``node_name``; :meth:`stop` writes what waits."""

    def __init__(self, client: ClusterClient, node_name: str) -> None:
        self._node = node_name
        self._recorder = EventRecorder(client, component=COMPONENT, instance=node_name)

    def start(self) -> None:
        self._recorder.start()

    def stop(self) -> None:
        self._recorder.stop()

    @staticmethod
    def _claim(ref: ClaimRef) -> ObjectRef:
        return ObjectRef("ResourceClaim", "resource.k8s.io/v1", ref.namespace, ref.name, ref.uid)

    def prepare_failed(self, ref: ClaimRef, error: str) -> None:
        self._recorder.emit(
            self._claim(ref),
            "Warning",
            "PrepareFailed",
            f"node {self._node}: preparing the claim failed: {error}",
        )

    def tainted(self, ref: ClaimRef, record: DeviceRecord, taints: Sequence[DeviceTaint]) -> None:
        evicted = any(t.effect == "NoExecute" for t in taints)
        self._recorder.emit(
            self._claim(ref),
            "Warning",
            "DeviceTainted",
            f"node {self._node}: device {record.device} ({record.uuid}) carries health "
            f"taints {describe_taints(taints)}"
            + ("; NoExecute: the pods using it are evicted" if evicted else "")
            + "; see docs/operations.md, Health taints",
        )

    def recovered(self, ref: ClaimRef, record: DeviceRecord) -> None:
        self._recorder.emit(
            self._claim(ref),
            "Normal",
            "DeviceRecovered",
            f"node {self._node}: device {record.device} ({record.uuid}) has no health taint "
            "any more",
        )
