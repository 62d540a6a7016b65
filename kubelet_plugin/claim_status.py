"""The plugin's word on each device it prepared, in the claim: ``status.devices`` (KEP-4817).

Once a claim is prepared, the plugin writes one entry per device of this driver into the
claim's ``status.devices``, keyed as the API server keys them (driver, pool, device and,
for a share, ``shareID``):

- ``conditions``: ``Ready`` (True, reason ``Prepared``: the CDI spec is written) and
  ``Healthy`` (True, reason ``NoHealthEvent``; False with the device's health taints as
  reason and message while it has any);
- ``data``: what a workload or an operator needs without asking the node: ``uuid``,
  ``pciBusID`` (of the GPU, a MIG device's parent's), ``migProfile`` for a MIG device,
  ``cdiDeviceIDs`` and ``deviceNode``.

After unprepare, the entries go. A device's health change rewrites the entries of the
claims that hold it.

Writes are JSON merge patches of ``.../resourceclaims/NAME/status`` naming only
``status.devices`` and the resourceVersion just read, so a concurrent writer is never
overwritten: on a conflict the claim is read and merged again (other drivers' entries stay
as they are). A patch, not a PUT of the whole status: the API server refuses a write whose
``status.allocation`` differs from the stored one in any byte (its opaque config
parameters are compared as raw bytes) unless the writer may bind claims, and a status
decoded and encoded again on this side need not keep those bytes. The API server accepts
a change of ``status.devices`` only from who may ``associated-node:patch`` (or
``arbitrary-node:patch``) the synthetic ``resourceclaims/driver`` subresource, resource
name the driver's name; the chart grants the first to the plugin, which holds for claims
allocated on its own node. A refusal (403) is logged once as a warning and counted; a
claim that is gone, deallocated or of another UID is left alone.

The writes run on a thread of their own (:class:`ClaimStatusWriter`), the newest wish per
claim replacing an older one still waiting, so the kubelet's prepare never waits for them.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from agent_kit.kube import ApiError, ClusterClient, ConflictError, ForbiddenError, NotFoundError
from api.checkpoint import ClaimEntry, DeviceRecord
from api.resource_v1 import DeviceTaint
from dra_driver.discovery.model import NodeInventory
from kubelet_plugin.claim_events import ClaimEvents, describe_taints
from kubelet_plugin.node_driver import ClaimRef, NodeDriver, PrepareResult

__all__ = ["ClaimStatusReporter", "ClaimStatusWriter", "device_entries"]

log = logging.getLogger(__name__)

#: Attempts at one claim's write when others keep changing it meanwhile.
MAX_ATTEMPTS: Final = 5
#: Claims waiting for a write at most; more are dropped (the next change writes again).
MAX_WAITING: Final = 10_000

#: Entries of this driver for one claim, or None to remove them.
Wanted = list[dict[str, Any]] | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def device_entries(
    driver_name: str,
    entry: ClaimEntry,
    inventory: NodeInventory,
    taints: Mapping[str, Sequence[DeviceTaint]],
    *,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The ``status.devices`` entries of a prepared claim's devices (module docstring)."""
    stamp = now or _now()
    entries = []
    for record in entry.devices:
        entries.append(
            {
                "driver": driver_name,
                "pool": record.pool,
                "device": record.device,
                **({"shareID": record.share_id} if record.share_id else {}),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Prepared",
                        "message": "prepared on the node: its CDI spec is written",
                        "lastTransitionTime": stamp,
                    },
                    _health_condition(record_taints(record, taints), stamp),
                ],
                "data": _data(record, inventory),
            }
        )
    return entries


def record_taints(
    record: DeviceRecord, taints: Mapping[str, Sequence[DeviceTaint]]
) -> tuple[DeviceTaint, ...]:
    """The health taints of a prepared device: its own and, for a MIG device, its GPU's
    (health is kept per GPU: a fault of the GPU affects every MIG device on it)."""
    names = [record.device]
    if record.mig is not None and record.mig.parent_device != record.device:
        names.insert(0, record.mig.parent_device)
    return tuple(t for name in names for t in taints.get(name, ()))


def _health_condition(taints: Sequence[DeviceTaint], stamp: str) -> dict[str, Any]:
    if not taints:
        return {
            "type": "Healthy",
            "status": "True",
            "reason": "NoHealthEvent",
            "message": "no health event is in force for this device",
            "lastTransitionTime": stamp,
        }
    described = describe_taints(taints)
    return {
        "type": "Healthy",
        "status": "False",
        "reason": "Tainted",
        "message": f"the device carries health taints: {described}",
        "lastTransitionTime": stamp,
    }


def _data(record: DeviceRecord, inventory: NodeInventory) -> dict[str, Any]:
    parent = record.mig.parent_device if record.mig is not None else record.device
    gpu = inventory.gpu_by_name(parent)
    data: dict[str, Any] = {
        "uuid": record.uuid,
        "cdiDeviceIDs": list(record.cdi_device_ids),
        "deviceNode": record.device_node,
    }
    if gpu is not None and gpu.pci_bus_id:
        data["pciBusID"] = gpu.pci_bus_id
    if record.mig is not None:
        data["migProfile"] = record.mig.profile
    return data


def _key(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (
        str(entry.get("driver")),
        str(entry.get("pool")),
        str(entry.get("device")),
        str(entry.get("shareID") or ""),
    )


def _merged(current: Sequence[Mapping[str, Any]], ours: Wanted, driver: str) -> list[Any]:
    """Other drivers' entries as they are, then ours; an unchanged condition keeps its
    ``lastTransitionTime`` (it did not transition)."""
    others = [dict(e) for e in current if e.get("driver") != driver]
    previous = {_key(e): e for e in current if e.get("driver") == driver}
    kept: list[dict[str, Any]] = []
    for wanted in ours or []:
        entry = wanted
        before = previous.get(_key(entry))
        if before is not None:
            old = {c.get("type"): c for c in before.get("conditions") or []}
            conditions = []
            for condition in entry["conditions"]:
                prior = old.get(condition["type"])
                same = prior is not None and all(
                    prior.get(f) == condition[f] for f in ("status", "reason", "message")
                )
                conditions.append(prior if same else condition)
            entry = {**entry, "conditions": conditions}
        kept.append(entry)
    return others + kept


class ClaimStatusWriter:
    """Writes the wished ``status.devices`` entries of claims from a thread of its own."""

    def __init__(self, client: ClusterClient, driver_name: str) -> None:
        self.client = client
        self.driver_name = driver_name
        self._cond = threading.Condition()
        self._waiting: OrderedDict[str, tuple[ClaimRef, Wanted]] = OrderedDict()
        self._stopped = False
        self._forbidden_logged = False
        self._thread: threading.Thread | None = None
        #: Writes done, refused (403) and failed otherwise, for the metrics and tests.
        self.written = 0
        self.forbidden = 0
        self.failed = 0

    def wish(self, ref: ClaimRef, entries: Wanted) -> None:
        """Make the claim hold ``entries`` as this driver's (None: none)."""
        with self._cond:
            if ref.uid not in self._waiting and len(self._waiting) >= MAX_WAITING:
                self.failed += 1
                return
            self._waiting[ref.uid] = (ref, entries)
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="claim-status", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def drain(self) -> None:
        """Write everything waiting now, on the caller's thread (tests, shutdown)."""
        while True:
            with self._cond:
                if not self._waiting:
                    return
                _, (ref, entries) = self._waiting.popitem(last=False)
            self.write(ref, entries)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                _, (ref, entries) = self._waiting.popitem(last=False)
            self.write(ref, entries)

    def write(self, ref: ClaimRef, entries: Wanted) -> bool:
        """One claim's write (module docstring); True when the claim holds ``entries``."""
        for _ in range(MAX_ATTEMPTS):
            try:
                claim = self.client.get("resourceclaims", ref.name, namespace=ref.namespace)
            except NotFoundError:
                return False
            except ApiError as err:
                self._failed(ref, err)
                return False
            meta = claim.get("metadata") or {}
            status = dict(claim.get("status") or {})
            if meta.get("uid") != ref.uid or (entries is not None and not status.get("allocation")):
                return False  # another claim of that name, or not allocated any more
            current = status.get("devices") or []
            merged = _merged(current, entries, self.driver_name)
            if merged == current:
                return True
            patch = {
                "metadata": {"resourceVersion": meta.get("resourceVersion")},
                "status": {"devices": merged or None},
            }
            try:
                self.client.patch_status("resourceclaims", ref.name, patch, namespace=ref.namespace)
            except ConflictError:
                continue
            except NotFoundError:
                return False
            except ForbiddenError as err:
                self.forbidden += 1
                if not self._forbidden_logged:
                    self._forbidden_logged = True
                    log.warning(
                        "cannot write status.devices of claim %s/%s: %s; grant the plugin "
                        "associated-node:patch on resourceclaims/driver, resourceName %s "
                        "(the chart does); the devices work without it",
                        ref.namespace,
                        ref.name,
                        err,
                        self.driver_name,
                    )
                return False
            except ApiError as err:
                self._failed(ref, err)
                return False
            self.written += 1
            return True
        self._failed(ref, ConflictError("the claim kept changing", status=409))
        return False

    def _failed(self, ref: ClaimRef, err: ApiError) -> None:
        self.failed += 1
        log.info("status.devices of claim %s/%s not written: %s", ref.namespace, ref.name, err)


class ClaimStatusReporter:
    """A NodeDriver that, after its inner driver answers, has the claims' ``status.devices``
    written (:class:`ClaimStatusWriter`); answers are the inner driver's, unchanged. With
    ``events``, a failed prepare and a health change of a device a claim holds are Events
    on the claim too (:mod:`kubelet_plugin.claim_events`)."""

    def __init__(
        self,
        inner: NodeDriver,
        writer: ClaimStatusWriter,
        *,
        prepared: Callable[[], Mapping[str, ClaimEntry]],
        inventory: NodeInventory,
        events: ClaimEvents | None = None,
    ) -> None:
        self._inner = inner
        self._events = events
        self._writer = writer
        self._prepared = prepared
        self._inventory = inventory
        self._lock = threading.Lock()
        self._taints: dict[str, tuple[DeviceTaint, ...]] = {}

    def _entries(self, entry: ClaimEntry) -> list[dict[str, Any]]:
        with self._lock:
            taints = dict(self._taints)
        return device_entries(self._writer.driver_name, entry, self._inventory, taints)

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        results = self._inner.prepare(claims)
        prepared = self._prepared()
        for ref in claims:
            result = results.get(ref.uid)
            entry = prepared.get(ref.uid)
            if result is not None and result.error is None and entry is not None:
                self._writer.wish(ref, self._entries(entry))
            elif result is not None and result.error is not None and self._events is not None:
                self._events.prepare_failed(ref, result.error)
        return results

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        results = self._inner.unprepare(claims)
        for ref in claims:
            if ref.uid in results and results[ref.uid] is None:
                self._writer.wish(ref, None)
        return results

    def health_changed(self, taints: Mapping[str, Sequence[DeviceTaint]]) -> None:
        """The devices' health taints now: rewrite the claims whose devices' changed."""
        with self._lock:
            before = self._taints
            self._taints = {d: tuple(t) for d, t in taints.items() if t}
            changed = {
                d for d in set(before) | set(self._taints) if before.get(d) != self._taints.get(d)
            }
            now = dict(self._taints)
        if not changed:
            return
        for uid, entry in self._prepared().items():
            if entry.state != "PrepareCompleted":
                continue
            touched = [
                record
                for record in entry.devices
                if record.device in changed
                or (record.mig is not None and record.mig.parent_device in changed)
            ]
            if not touched:
                continue
            ref = ClaimRef(namespace=entry.namespace, name=entry.name, uid=uid)
            self._writer.wish(ref, self._entries(entry))
            if self._events is None:
                continue
            for record in touched:
                if taints_now := record_taints(record, now):
                    self._events.tainted(ref, record, taints_now)
                else:
                    self._events.recovered(ref, record)
