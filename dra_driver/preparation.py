"""Claim preparation as a pure function: from a claim and the node's GPUs to a plan.

:func:`plan_preparation` checks a ResourceClaim the kubelet asked this node to
prepare and says what preparing it means: the devices of this driver in this
node's pool, each with its merged sharing configuration, the CDI spec to write
and the CDI device IDs to answer. It does no I/O: the kubelet plugin reads the
claim, keeps the checkpoint and writes the file.

MIG devices: a static MIG device (MIG mode on) is prepared as it is; a
placement of a partitionable GPU (dynamic MIG) is planned with its placement
but without a UUID, and the plan has no spec until the kubelet plugin created
it and called :func:`with_mig_devices`. A GpuConfig that applies to a MIG device
is an error, as with NVIDIA's driver: its sharing settings mean nothing there.

Shared GPUs (consumable capacity): a result with a ``shareID`` is one share of a
GPU that several claims may hold; its CDI device is named after the share so
that the shares of one GPU never clash. How each device is shared (opaque
GpuConfig entries, a share's consumed capacity as MPS limits) is
:mod:`dra_driver.sharing`.

Device metadata (KEP-5304): where the host offers a metadata root
(:attr:`HostFiles.metadata_root`), the plan names one file per request
(:mod:`dra_driver.device_metadata`), the spec mounts each through a device of its
own, and the first device of each request carries that device's CDI ID too.

The plan as the checkpoint keeps it, and back, is :mod:`dra_driver.prepared_claims`.

Errors are :class:`api.errors.PrepareError` naming the claim and the field:
``claim default/c: status.allocation.devices.results[0].pool: ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from api.checkpoint import DeviceMetadataRecord, MigRecord
from api.errors import PrepareError
from api.resource_v1 import (
    DeviceRequestAllocationResult,
    NodeSelector,
    ResourceClaim,
    claim_label,
)
from dra_driver.cdi import (
    CdiSpec,
    FileDevice,
    HostFiles,
    SharingSettings,
    SpecDevice,
    build_cdi_spec,
    cdi_device_id,
    cdi_device_name,
    gpu_env_key,
    spec_file_name,
)
from dra_driver.device_metadata import (
    POD_CLAIM_NAME_ANNOTATION,
    PlannedMetadata,
    plan_request_files,
)
from dra_driver.discovery.model import MigDevice, MigPlacement, NodeInventory
from dra_driver.sharing import (
    CONFIG_FIELD,
    capacity_sharing,
    config_sharing,
    decode_configs,
    precedence_order,
    winning_config,
)

__all__ = [
    "PlannedDevice",
    "PreparationPlan",
    "assemble_plan",
    "claim_label",
    "plan_preparation",
    "with_mig_devices",
]

_RESULTS = "status.allocation.devices.results"


@dataclass(frozen=True, slots=True)
class PlannedDevice:
    """One device of the claim to prepare."""

    requests: tuple[str, ...]
    """Requests it was allocated for, as in the allocation (``req`` or ``req/sub``)."""
    pool: str
    device: str
    share_id: str | None
    admin_access: bool
    uuid: str
    device_node: str
    """``/dev/nvidia<minor>``"""
    sharing: SharingSettings | None
    """None: exclusive use."""
    cdi_device_name: str
    cdi_device_id: str
    mig: MigRecord | None = None
    """Set for a MIG device; ``uuid`` is then the MIG UUID ("" until a dynamic one exists)."""

    @property
    def pending_mig(self) -> bool:
        """A dynamic MIG device not created yet."""
        return self.mig is not None and self.mig.dynamic and not self.uuid


@dataclass(frozen=True, slots=True)
class PreparationPlan:
    """What preparing one claim means on this node."""

    claim_uid: str
    namespace: str
    name: str
    devices: tuple[PlannedDevice, ...]
    """In allocation order; empty when no device of the claim is this driver's."""
    spec: CdiSpec | None
    """None when ``devices`` is empty (nothing to inject) or a dynamic MIG device is
    still to be created (:attr:`pending_migs`)."""
    spec_file_name: str
    device_metadata: DeviceMetadataRecord | None = None
    """Set when the claim gets device metadata files (:attr:`metadata`)."""
    metadata: tuple[PlannedMetadata, ...] = ()
    """One file per request of this driver; empty without :attr:`device_metadata`."""

    @property
    def label(self) -> str:
        return claim_label(self.namespace, self.name)

    @property
    def pending_migs(self) -> tuple[PlannedDevice, ...]:
        """Dynamic MIG devices to create before the spec can be built."""
        return tuple(d for d in self.devices if d.pending_mig)


def _node_excluded(selector: NodeSelector | None, node_name: str) -> str | None:
    """The node names the selector allows when it clearly excludes ``node_name``, else None.

    Only ``matchFields`` on ``metadata.name`` can be judged without the Node's
    labels; a term without one might match, so it keeps the node in.
    """
    if selector is None or not selector.node_selector_terms:
        return None
    allowed: list[str] = []
    for term in selector.node_selector_terms:
        names = [
            req
            for req in term.match_fields or ()
            if req.key == "metadata.name" and req.operator in ("In", "NotIn")
        ]
        if not names:
            return None
        excluded = False
        for req in names:
            values = req.values or []
            if (req.operator == "In") != (node_name in values):
                excluded = True
            if req.operator == "In":
                allowed.extend(values)
        if not excluded:
            return None
    return ", ".join(sorted(set(allowed))) or "other nodes"


def plan_preparation(
    claim: ResourceClaim,
    *,
    uid: str,
    inventory: NodeInventory,
    driver_name: str,
    pool_name: str,
    host: HostFiles,
) -> PreparationPlan:
    """Check ``claim`` for this node and say what preparing it means.

    ``uid`` is the UID the kubelet asked for; ``pool_name`` is this node's pool.
    Raises PrepareError (with ``retryable`` set where a later retry can succeed
    without a change to the claim) when the claim was replaced (other UID), is
    not allocated, has a device of this driver in another pool or on another
    node, names a device this node does not have, or carries a GpuConfig that
    does not decode. Deterministic: the same inputs give the same plan.
    """
    namespace = claim.metadata.namespace or ""
    name = claim.metadata.name or ""
    label = claim_label(namespace, name)
    if claim.metadata.uid != uid:
        raise PrepareError(
            f"got replaced: the API server has UID {claim.metadata.uid}, the kubelet asked to "
            f"prepare UID {uid}; the pod that used the old claim must go away first",
            claim=label,
        )
    allocation = claim.status.allocation if claim.status is not None else None
    if allocation is None:
        raise PrepareError(
            "not allocated: status.allocation is not set; the scheduler allocates it first",
            claim=label,
            retryable=True,
        )
    allowed = _node_excluded(allocation.node_selector, inventory.node_name)
    if allowed is not None:
        raise PrepareError(
            f"status.allocation.nodeSelector: allocated for node {allowed}, not for this node "
            f"{inventory.node_name}: the kubelet of that node prepares it",
            claim=label,
        )
    results = (allocation.devices.results if allocation.devices else None) or []
    config_entries = (allocation.devices.config if allocation.devices else None) or []

    ours: list[tuple[int, DeviceRequestAllocationResult]] = []
    for index, result in enumerate(results):
        if result.driver != driver_name:
            continue
        if result.pool != pool_name:
            raise PrepareError(
                f"{_RESULTS}[{index}].pool: device {result.device} is in pool {result.pool}, "
                f"but this is node {inventory.node_name} with pool {pool_name}: the claim is "
                "allocated to another node",
                claim=label,
            )
        if inventory.gpu_by_name(result.device) is None and (
            inventory.mig_by_name(result.device) is None
        ):
            known = ", ".join(g.device_name for g in inventory.gpus) or "none"
            raise PrepareError(
                f"{_RESULTS}[{index}].device: node {inventory.node_name} has no device "
                f"{result.device} (devices: {known}); the allocation is stale or the GPU is gone",
                claim=label,
            )
        ours.append((index, result))

    decoded = decode_configs(config_entries, driver_name, label)
    ordered = precedence_order(config_entries, decoded)

    # Merge results that name the same device (several requests with admin access).
    merged: dict[tuple[str, str, str | None], list[DeviceRequestAllocationResult]] = {}
    for _, result in ours:
        merged.setdefault((result.pool, result.device, result.share_id), []).append(result)

    winners = {
        key: winning_config(config_entries, ordered, (r.request for r in group))
        for key, group in merged.items()
    }

    devices: list[PlannedDevice] = []
    for key, group in merged.items():
        pool, device, share_id = key
        winner = winners[key]
        requests = tuple(dict.fromkeys(r.request for r in group))
        name_in_cdi = cdi_device_name(uid, device, share_id)
        gpu = inventory.gpu_by_name(device)
        if gpu is None:
            placement = inventory.mig_by_name(device)
            assert placement is not None  # checked above
            if winner is not None:
                raise PrepareError(
                    f"{CONFIG_FIELD}[{winner}]: a GpuConfig applies to request "
                    f"{', '.join(requests)}, which got MIG device {device}; GpuConfig is for "
                    "full GPUs: name only full-GPU requests in the entry's requests",
                    claim=label,
                )
            devices.append(
                PlannedDevice(
                    requests=requests,
                    pool=pool,
                    device=device,
                    share_id=share_id,
                    admin_access=any(r.admin_access for r in group),
                    uuid=placement.existing.uuid if placement.existing is not None else "",
                    device_node=placement.gpu.device_node,
                    sharing=None,
                    cdi_device_name=name_in_cdi,
                    cdi_device_id=cdi_device_id(driver_name, name_in_cdi),
                    mig=_mig_record(placement),
                )
            )
            continue
        sharing: SharingSettings | None = None
        if winner is not None:
            same_config = [k for k, w in winners.items() if w == winner]
            uuids = [_uuid(inventory, k[1]) for k in same_config]
            sharing = config_sharing(decoded[winner], winner, uuids, same_config.index(key), label)
        if share_id is not None:
            sharing = capacity_sharing(sharing, group, config_index=winner, label=label)
        devices.append(
            PlannedDevice(
                requests=requests,
                pool=pool,
                device=device,
                share_id=share_id,
                admin_access=any(r.admin_access for r in group),
                uuid=gpu.uuid,
                device_node=gpu.device_node,
                sharing=sharing,
                cdi_device_name=name_in_cdi,
                cdi_device_id=cdi_device_id(driver_name, name_in_cdi),
            )
        )
    metadata = None
    if host.metadata_root is not None:
        annotations = claim.metadata.annotations or {}
        metadata = DeviceMetadataRecord(pod_claim_name=annotations.get(POD_CLAIM_NAME_ANNOTATION))
    try:
        return assemble_plan(
            uid,
            namespace=namespace,
            name=name,
            devices=tuple(devices),
            driver_name=driver_name,
            host=host,
            device_metadata=metadata,
        )
    except ValueError as err:
        raise PrepareError(
            f"device metadata: {err}; see metadata.annotations[{POD_CLAIM_NAME_ANNOTATION!r}] "
            "and spec.devices.requests[].name",
            claim=label,
        ) from None


def _mig_record(placement: MigPlacement) -> MigRecord:
    existing = placement.existing
    return MigRecord(
        parent_device=placement.gpu.device_name,
        parent_uuid=placement.gpu.uuid,
        profile=placement.profile.name,
        profile_id=placement.profile.profile_id,
        placement_start=placement.placement[0],
        placement_size=placement.placement[1],
        dynamic=existing is None,
        gpu_instance_id=None if existing is None else existing.gpu_instance_id,
        compute_instance_id=None if existing is None else existing.compute_instance_id,
        cap_device_nodes=() if existing is None else existing.cap_device_nodes,
    )


def with_mig_devices(
    plan: PreparationPlan,
    created: Mapping[str, MigDevice],
    *,
    driver_name: str,
    host: HostFiles,
) -> PreparationPlan:
    """The plan with its dynamic MIG devices filled in from ``created`` (by device name).

    Its spec is built once no MIG device is pending. Raises ValueError when
    ``created`` lacks a pending device (a caller bug, not a claim error).
    """
    devices: list[PlannedDevice] = []
    for device in plan.devices:
        if device.pending_mig and device.mig is not None:
            mig = created.get(device.device)
            if mig is None:
                raise ValueError(f"MIG device {device.device} was not created")
            device = replace(  # noqa: PLW2901 - the filled-in copy replaces it
                device,
                uuid=mig.uuid,
                mig=device.mig.model_copy(
                    update={
                        "gpu_instance_id": mig.gpu_instance_id,
                        "compute_instance_id": mig.compute_instance_id,
                        "cap_device_nodes": mig.cap_device_nodes,
                    }
                ),
            )
        devices.append(device)
    return assemble_plan(
        plan.claim_uid,
        namespace=plan.namespace,
        name=plan.name,
        devices=tuple(devices),
        driver_name=driver_name,
        host=host,
        device_metadata=plan.device_metadata,
    )


def _uuid(inventory: NodeInventory, device: str) -> str:
    gpu = inventory.gpu_by_name(device)
    return gpu.uuid if gpu is not None else ""


def assemble_plan(
    uid: str,
    *,
    namespace: str,
    name: str,
    devices: tuple[PlannedDevice, ...],
    driver_name: str,
    host: HostFiles,
    device_metadata: DeviceMetadataRecord | None = None,
) -> PreparationPlan:
    """The plan of ``devices`` with its spec (none while a MIG device is pending) and, with
    ``device_metadata`` and a metadata root in ``host``, its metadata files. Raises
    ValueError for a request or pod claim name that cannot name a metadata path."""
    metadata: tuple[PlannedMetadata, ...] = ()
    if not devices or host.metadata_root is None:
        device_metadata = None
    if device_metadata is not None:
        assert host.metadata_root is not None  # checked above
        metadata = plan_request_files(
            uid,
            name,
            [(d.device, d.requests) for d in devices],
            driver_name=driver_name,
            root=host.metadata_root,
            pod_claim_name=device_metadata.pod_claim_name,
        )
    spec = None
    if devices and not any(d.pending_mig for d in devices):
        spec = build_cdi_spec(
            driver_name=driver_name,
            devices=[
                SpecDevice(
                    name=d.cdi_device_name,
                    env_key=gpu_env_key(d.device, d.share_id),
                    uuid=d.uuid,
                    device_node=d.device_node,
                    sharing=d.sharing,
                    extra_device_nodes=() if d.mig is None else d.mig.cap_device_nodes,
                )
                for d in devices
            ],
            host=host,
            file_devices=[
                FileDevice(
                    name=m.cdi_device_name,
                    host_path=m.host_path,
                    container_path=m.container_path,
                )
                # One mount per path: a request and its subrequest share the file.
                for m in {m.container_path: m for m in metadata}.values()
            ],
        )
    return PreparationPlan(
        claim_uid=uid,
        namespace=namespace,
        name=name,
        devices=devices,
        spec=spec,
        spec_file_name=spec_file_name(driver_name, uid),
        device_metadata=device_metadata,
        metadata=metadata,
    )
