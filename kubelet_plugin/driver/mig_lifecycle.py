"""Dynamic MIG devices of prepared claims: created by prepare, destroyed by unprepare.

Start-up recovery also makes them anew after a reboot (MIG devices do not
survive one) and destroys those of claims it rolls back or removes. A MIG
record in the checkpoint names its GPU by UUID, its profile and its placement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from api.checkpoint import ClaimEntry, MigRecord
from api.errors import PrepareError
from api.resource_v1 import claim_label
from dra_driver.cdi import HostFiles
from dra_driver.discovery.model import Gpu, MigDevice, MigManager, MigProfile, NodeInventory
from dra_driver.preparation import PreparationPlan, with_mig_devices
from kubelet_plugin.node_driver import ClaimRef

__all__ = ["MigLifecycle", "dynamic_migs"]

log = logging.getLogger(__name__)


class MigLifecycle:
    """Creates and destroys the dynamic MIG devices that claims' checkpoint records name.

    ``manager`` does the work on the GPUs; without one, a claim for a MIG
    placement fails with an error saying so (static MIG devices and full GPUs
    need none). ``inventory`` returns the node's current discovery result, in
    which records find their GPU and profile.
    """

    def __init__(
        self,
        manager: MigManager | None,
        *,
        driver_name: str,
        host: HostFiles,
        inventory: Callable[[], NodeInventory],
    ) -> None:
        self._manager = manager
        self._driver_name = driver_name
        self._host = host
        self._inventory = inventory

    def create(
        self, ref: ClaimRef, plan: PreparationPlan, created: list[MigRecord]
    ) -> PreparationPlan:
        """Create the plan's dynamic MIG devices, appending each to ``created`` as it exists.

        The plan comes back with the devices filled in (UUIDs, capability
        nodes). Raises PrepareError naming the device that failed.
        """
        if self._manager is None:
            names = ", ".join(d.device for d in plan.pending_migs)
            raise PrepareError(
                f"{names}: a MIG placement to create, but this node's GPU backend cannot create "
                "MIG devices; publish without partitionable devices (--partitionable=false)",
                claim=str(ref),
            )
        made: dict[str, MigDevice] = {}
        for device in plan.pending_migs:
            assert device.mig is not None  # pending
            gpu, profile, placement = self._target(device.mig, str(ref))
            try:
                made[device.device] = self._manager.create(gpu, profile, placement)
            except PrepareError as err:
                raise PrepareError(
                    f"creating MIG device {device.device} failed: {err}",
                    claim=str(ref),
                    retryable=err.retryable,
                ) from err
            created.append(device.mig)
            log.info("%s: created MIG device %s (%s)", ref, device.device, made[device.device].uuid)
        return with_mig_devices(plan, made, driver_name=self._driver_name, host=self._host)

    def ensure(self, entry: ClaimEntry) -> tuple[ClaimEntry, bool]:
        """Make sure a prepared claim's dynamic MIG devices exist; (entry, whether one changed).

        Creating is idempotent (an existing device is returned), so this only
        makes anew what a reboot took away; a device that comes back with
        another UUID or capability node updates the entry (and the spec).
        Raises PrepareError.
        """
        if self._manager is None:
            raise PrepareError("no MIG manager on this node")
        label = claim_label(entry.namespace, entry.name)
        records = []
        changed = False
        for record in entry.devices:
            if record.mig is not None and record.mig.dynamic:
                gpu, profile, placement = self._target(record.mig, label)
                mig = self._manager.create(gpu, profile, placement)
                updated = record.model_copy(
                    update={
                        "uuid": mig.uuid,
                        "mig": record.mig.model_copy(
                            update={
                                "gpu_instance_id": mig.gpu_instance_id,
                                "compute_instance_id": mig.compute_instance_id,
                                "cap_device_nodes": mig.cap_device_nodes,
                            }
                        ),
                    }
                )
                changed = changed or updated != record
                record = updated  # noqa: PLW2901 - the updated copy replaces it
            records.append(record)
        return entry.model_copy(update={"devices": tuple(records)}), changed

    def destroy(self, who: str, records: Sequence[MigRecord]) -> str | None:
        """Destroy these dynamic MIG devices; what failed, or None. Logs, never raises.

        A record whose GPU the node no longer has counts as destroyed: a MIG
        device cannot outlive its GPU.
        """
        problems = []
        for record in records:
            try:
                if self._manager is None:
                    raise PrepareError("no MIG manager on this node")
                try:
                    gpu, profile, placement = self._target(record, who)
                except _GpuGoneError as err:
                    log.warning("%s: %s; nothing to destroy", who, err)
                    continue
                if self._manager.destroy(gpu, profile, placement):
                    log.info(
                        "%s: destroyed MIG device %s at memory slice %d of %s",
                        who,
                        record.profile,
                        record.placement_start,
                        record.parent_device,
                    )
            except Exception as err:
                log.error("%s: destroying MIG device %s failed: %s", who, record.profile, err)
                problems.append(f"destroying MIG device {record.profile} failed: {err}")
        return "; ".join(problems) or None

    def _target(self, record: MigRecord, who: str) -> tuple[Gpu, MigProfile, tuple[int, int]]:
        """The GPU, profile and placement of a MIG record, from the current inventory.

        The GPU is found by UUID: its minor number, hence its name, may change
        across a reboot. Raises _GpuGoneError when the node no longer has it.
        """
        inventory = self._inventory()
        gpu = next((g for g in inventory.gpus if g.uuid == record.parent_uuid), None)
        profile = None
        if gpu is not None:
            profile = next((p for p in gpu.mig_profiles if p.profile_id == record.profile_id), None)
        if gpu is None or profile is None:
            raise _GpuGoneError(
                f"MIG device {record.profile} at memory slice {record.placement_start} needs GPU "
                f"{record.parent_device} ({record.parent_uuid}) with profile ID "
                f"{record.profile_id}, which this node no longer has",
                claim=who,
            )
        return gpu, profile, (record.placement_start, record.placement_size)


class _GpuGoneError(PrepareError):
    """The GPU (or its MIG profile) a MIG record names is not on this node any more."""


def dynamic_migs(entry: ClaimEntry) -> list[MigRecord]:
    """The records of the dynamic MIG devices (created for the claim) of one entry."""
    return [d.mig for d in entry.devices if d.mig is not None and d.mig.dynamic]
