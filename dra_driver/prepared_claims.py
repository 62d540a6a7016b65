"""A prepared claim as the checkpoint keeps it, and back: its device records, the plan
to write its CDI spec again without the API server, and its device metadata files.

Pure, like :mod:`dra_driver.preparation`, whose plans these are.
"""

from __future__ import annotations

from api.checkpoint import ClaimEntry, DeviceRecord, SharingRecord
from dra_driver.cdi import HostFiles, SharingSettings, cdi_device_id, cdi_device_name
from dra_driver.device_metadata import first_device_ids, request_file_contents
from dra_driver.discovery.model import NodeInventory
from dra_driver.preparation import PlannedDevice, PreparationPlan, assemble_plan

__all__ = ["checkpoint_devices", "metadata_files", "plan_from_checkpoint"]


def checkpoint_devices(plan: PreparationPlan) -> tuple[DeviceRecord, ...]:
    """The plan's devices as the checkpoint keeps them (with the metadata CDI IDs)."""
    extra = first_device_ids(plan.metadata)
    return tuple(
        DeviceRecord(
            requests=d.requests,
            pool=d.pool,
            device=d.device,
            share_id=d.share_id,
            admin_access=d.admin_access,
            cdi_device_ids=(d.cdi_device_id, *extra.get(d.device, ())),
            uuid=d.uuid,
            device_node=d.device_node,
            sharing=None
            if d.sharing is None
            else SharingRecord(
                strategy=d.sharing.strategy,
                time_slice_interval=d.sharing.time_slice_interval,
                mps_active_thread_percentage=d.sharing.mps_active_thread_percentage,
                mps_pinned_memory_limit_bytes=d.sharing.mps_pinned_memory_limit_bytes,
            ),
            mig=d.mig,
        )
        for d in plan.devices
    )


def plan_from_checkpoint(
    uid: str, entry: ClaimEntry, *, driver_name: str, host: HostFiles
) -> PreparationPlan:
    """The plan a checkpointed claim was prepared with, to write its CDI spec again.

    Needs neither the API server nor the inventory; with the same ``host`` it
    gives the spec that was written (device names and IDs are recomputed from
    the claim UID and device, and equal the recorded ones).
    """
    devices = []
    for record in entry.devices:
        name_in_cdi = cdi_device_name(uid, record.device, record.share_id)
        sharing = record.sharing
        devices.append(
            PlannedDevice(
                requests=record.requests,
                pool=record.pool,
                device=record.device,
                share_id=record.share_id,
                admin_access=record.admin_access,
                uuid=record.uuid,
                device_node=record.device_node,
                sharing=None
                if sharing is None
                else SharingSettings(
                    strategy=sharing.strategy,
                    time_slice_interval=sharing.time_slice_interval,
                    mps_active_thread_percentage=sharing.mps_active_thread_percentage,
                    mps_pinned_memory_limit_bytes=sharing.mps_pinned_memory_limit_bytes,
                ),
                cdi_device_name=name_in_cdi,
                cdi_device_id=cdi_device_id(driver_name, name_in_cdi),
                mig=record.mig,
            )
        )
    return assemble_plan(
        uid,
        namespace=entry.namespace,
        name=entry.name,
        devices=tuple(devices),
        driver_name=driver_name,
        host=host,
        device_metadata=entry.device_metadata,
    )


def metadata_files(
    plan: PreparationPlan, inventory: NodeInventory, *, driver_name: str
) -> dict[str, bytes]:
    """The content of each of the plan's metadata files, by host path
    (:func:`~dra_driver.device_metadata.request_file_contents`)."""
    record = plan.device_metadata
    return request_file_contents(
        plan.metadata,
        {d.device: (d.pool, d.uuid) for d in plan.devices},
        inventory,
        driver_name=driver_name,
        namespace=plan.namespace,
        name=plan.name,
        uid=plan.claim_uid,
        pod_claim_name=record.pod_claim_name if record is not None else None,
    )
