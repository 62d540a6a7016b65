"""The kubelet plugin's checkpoint: what it prepared, in a versioned on-disk schema.

The file is JSON::

    {
      "version": 1,
      "claims": {
        "<claim uid>": {
          "namespace": "default", "name": "train-0",
          "state": "PrepareCompleted",
          "bootId": "5a0c...",
          "cdiSpecPath": "/var/run/cdi/gpu.dra-driver.io-<uid>.json",
          "devices": [
            {"requests": ["gpu"], "pool": "node-a", "device": "gpu-0",
             "cdiDeviceIds": ["gpu.dra-driver.io/gpu=<uid>-gpu-0"],
             "uuid": "GPU-...", "deviceNode": "/dev/nvidia0",
             "sharing": {"strategy": "MPS", "mpsActiveThreadPercentage": 50}},
            {"requests": ["mig"], "pool": "node-a", "device": "gpu-1-mig-1g10gb-19-0",
             "cdiDeviceIds": ["gpu.dra-driver.io/gpu=<uid>-gpu-1-mig-1g10gb-19-0"],
             "uuid": "MIG-...", "deviceNode": "/dev/nvidia1",
             "mig": {"parentDevice": "gpu-1", "parentUuid": "GPU-...", "profile": "1g.10gb",
                     "profileId": 19, "placementStart": 0, "placementSize": 1,
                     "dynamic": true, "gpuInstanceId": 1, "computeInstanceId": 0,
                     "capDeviceNodes": ["/dev/nvidia-caps/nvidia-cap147", ...]}}
          ]
        }
      }
    }

Two-phase preparation: an entry is written ``PrepareStarted`` before the CDI
spec, and ``PrepareCompleted`` after it. After a crash, a started entry is rolled
back and a completed one is trusted; ``bootId`` tells a restart from a reboot
(after a reboot the CDI specs, kept on a tmpfs, are gone and must be redone).
A device record holds everything needed to write the claim's CDI spec again
without the API server.

MIG devices carry a ``mig`` record. A dynamic one (created at prepare,
destroyed at unprepare) is written ``PrepareStarted`` *before* it is created,
with its placement but no UUID yet, so that start-up can destroy an instance a
crash left half made; the UUID and capability nodes are recorded once it exists.
The ``mig`` field is optional, so files written before it existed still read
as version 1.

Compatibility: :func:`decode_checkpoint` reads the current version and every
older one for which :data:`UPGRADES` has a step (each step turns version N
into N+1). A newer version is refused with :class:`CheckpointVersionError` so
a downgraded plugin never rewrites state it does not understand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from api.errors import CheckpointError

__all__ = [
    "CHECKPOINT_VERSION",
    "UPGRADES",
    "Checkpoint",
    "CheckpointVersionError",
    "ClaimEntry",
    "ClaimState",
    "DeviceRecord",
    "MigRecord",
    "SharingRecord",
    "Upgrade",
    "assemble_checkpoint",
    "decode_checkpoint",
    "encode_checkpoint",
    "encode_claim_entry",
]

#: The schema version this code writes.
CHECKPOINT_VERSION: Final = 1

ClaimState: TypeAlias = Literal["PrepareStarted", "PrepareCompleted"]

#: Turns a decoded document of version N into one of version N+1.
Upgrade: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]

#: Upgrade steps by the version they read. Version 1 is the first, so none yet;
#: a change to the schema bumps CHECKPOINT_VERSION and adds the step from the old one.
UPGRADES: Final[Mapping[int, Upgrade]] = {}


class CheckpointVersionError(CheckpointError):
    """The checkpoint was written by a newer version of the plugin (a downgrade).

    Not corrupt: the plugin refuses to start and leaves the file alone; upgrading
    again, or removing the file by hand, is the fix.
    """


class _CheckpointModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class SharingRecord(_CheckpointModel):
    """How a prepared GPU is shared (merged config with defaults); absent: exclusive."""

    strategy: str
    time_slice_interval: str | None = None
    mps_active_thread_percentage: int | None = None
    mps_pinned_memory_limit_bytes: int | None = None


class MigRecord(_CheckpointModel):
    """Where a prepared MIG device lies, and whether this plugin created it."""

    parent_device: str
    """The full GPU's device name, ``gpu-<minor>``."""
    parent_uuid: str
    profile: str
    """Profile name, ``1g.10gb``."""
    profile_id: int
    placement_start: int
    placement_size: int
    dynamic: bool
    """True: created at prepare, destroyed at unprepare; False: a static MIG device."""
    gpu_instance_id: int | None = None
    """None while a dynamic MIG device is not created yet (``PrepareStarted``)."""
    compute_instance_id: int | None = None
    cap_device_nodes: tuple[str, ...] = ()
    """``/dev/nvidia-caps/nvidia-cap<N>`` of the GPU and compute instance."""


class DeviceRecord(_CheckpointModel):
    """One prepared device: what the kubelet was told, and what the CDI spec needs."""

    requests: tuple[str, ...]
    pool: str
    device: str
    share_id: str | None = Field(default=None, alias="shareID")
    admin_access: bool = False
    cdi_device_ids: tuple[str, ...]
    uuid: str
    device_node: str
    """The GPU's node; for a MIG device its parent's."""
    sharing: SharingRecord | None = None
    mig: MigRecord | None = None
    """Set for a MIG device (``uuid`` is then the MIG UUID, empty until it is created)."""


class ClaimEntry(_CheckpointModel):
    """One claim this node prepared or started to prepare."""

    namespace: str
    name: str
    state: ClaimState
    boot_id: str
    """Boot in which the state was reached (``/proc/sys/kernel/random/boot_id``)."""
    cdi_spec_path: str
    devices: tuple[DeviceRecord, ...]


class Checkpoint(_CheckpointModel):
    """All claims of this node, keyed by claim UID."""

    version: int = CHECKPOINT_VERSION
    claims: dict[str, ClaimEntry] = Field(default_factory=dict)


def encode_claim_entry(entry: ClaimEntry) -> str:
    """One entry's JSON text exactly as :func:`encode_checkpoint` writes it."""
    document = entry.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def assemble_checkpoint(encoded_claims: Mapping[str, str]) -> bytes:
    """The file's bytes from entries already encoded by :func:`encode_claim_entry`, by UID.

    For a writer that changes one entry at a time and saves often: it encodes
    each entry once instead of every entry at every save.
    """
    claims = ",".join(f"{json.dumps(uid)}:{encoded_claims[uid]}" for uid in sorted(encoded_claims))
    return f'{{"claims":{{{claims}}},"version":{CHECKPOINT_VERSION}}}'.encode()


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The file's bytes: compact JSON, keys sorted (so equal checkpoints give equal bytes)."""
    if checkpoint.version != CHECKPOINT_VERSION:
        raise ValueError(f"only version {CHECKPOINT_VERSION} is written, not {checkpoint.version}")
    return assemble_checkpoint(
        {uid: encode_claim_entry(entry) for uid, entry in checkpoint.claims.items()}
    )


def decode_checkpoint(data: bytes, *, upgrades: Mapping[int, Upgrade] = UPGRADES) -> Checkpoint:
    """Read a checkpoint of the current version or of an older one that ``upgrades`` covers.

    Raises CheckpointVersionError for a version newer than this code, and
    CheckpointError for anything else that is not a checkpoint (not JSON, no
    version, a version without an upgrade path, a field of the wrong type).
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"checkpoint must be a JSON object, not {type(document).__name__}")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"checkpoint has no integer version field (version: {version!r})")
    if version > CHECKPOINT_VERSION:
        raise CheckpointVersionError(
            f"checkpoint version {version} was written by a newer plugin; this one reads "
            f"versions up to {CHECKPOINT_VERSION}: upgrade the plugin again"
        )
    while version < CHECKPOINT_VERSION:
        upgrade = upgrades.get(version)
        if upgrade is None:
            raise CheckpointError(
                f"checkpoint version {version} is not readable: this plugin reads versions "
                f"{min([*upgrades, CHECKPOINT_VERSION])} to {CHECKPOINT_VERSION}"
            )
        document = upgrade(document)
        next_version = document.get("version")
        if next_version != version + 1:  # a step that forgets to bump would loop forever
            raise CheckpointError(
                f"upgrading checkpoint version {version} gave version {next_version!r}"
            )
        version = next_version
    try:
        # JSON-mode validation: strict, yet JSON arrays fill the tuple fields.
        return Checkpoint.model_validate_json(json.dumps(document))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise CheckpointError(
            f"checkpoint does not match schema version {version}: {problems}"
        ) from None
