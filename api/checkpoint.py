"""The kubelet plugin's checkpoint: what it prepared, in a versioned on-disk schema.

The file is JSON::

    {
      "version": 2,
      "claims": {
        "<claim uid>": {
          "namespace": "default", "name": "train-0",
          "state": "PrepareCompleted",
          "bootId": "5a0c...",
          "cdiSpecPath": "/var/run/cdi/gpu.dra-driver.io-<uid>.json",
          "cdiSpecDigest": "sha256:9f86d0...",
          "deviceMetadata": {"podClaimName": "gpu"},
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

``cdiSpecDigest`` (version 2) is the :func:`spec_digest` of the exact bytes of
the claim's CDI spec as the plugin wrote them: re-prepare and start-up compare
the file with it and write the spec again from the entry when someone else
changed it. It is absent while ``PrepareStarted`` and in entries read from
version 1; the plugin writes such a spec again once and records its digest.

``deviceMetadata`` (version 3) is set when the prepare wrote the claim's device
metadata files (KEP-5304, :mod:`dra_driver.device_metadata`), one per request, and
mounted them through the claim's spec; ``podClaimName`` is the pod's name for a claim
made from a template (its ``resource.kubernetes.io/pod-claim-name`` annotation), which
names the file's path in the container. With it the spec and the files can be written
again, and removed, without the API server. Absent in entries of older versions: their
spec mounts no metadata file, and stays so.

Compatibility: :func:`decode_checkpoint` reads the current version and every
older one for which :data:`UPGRADES` has a step (each step turns version N
into N+1). Any other version, newer (a downgrade) or older than the oldest
step, is refused with :class:`CheckpointVersionError`, which is not
corruption: the file parses, and the claims it records hold GPUs, so the
plugin must neither rewrite it nor move it aside.

Why version 2 for an optional field: the models forbid unknown fields, so a
version-1 plugin would read ``cdiSpecDigest`` as corruption and move the file
aside; with the bump it refuses the file as a newer version and leaves it be.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
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
    "DeviceMetadataRecord",
    "DeviceRecord",
    "MigRecord",
    "SharingRecord",
    "StateFileModel",
    "Upgrade",
    "assemble_checkpoint",
    "decode_checkpoint",
    "encode_checkpoint",
    "encode_claim_entry",
    "spec_digest",
]

#: The schema version this code writes.
CHECKPOINT_VERSION: Final = 3

ClaimState: TypeAlias = Literal["PrepareStarted", "PrepareCompleted"]

#: Turns a decoded document of version N into one of version N+1.
Upgrade: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]


def _upgrade_from_1(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2: ``cdiSpecDigest`` is new and optional; the entries stay as they are."""
    return {**document, "version": 2}


def _upgrade_from_2(document: dict[str, Any]) -> dict[str, Any]:
    """Version 2 to 3: ``deviceMetadata`` is new and optional; the entries stay as they are."""
    return {**document, "version": 3}


#: Upgrade steps by the version they read; a change to the schema bumps
#: CHECKPOINT_VERSION and adds the step from the old one. Version 1 is the first.
UPGRADES: Final[Mapping[int, Upgrade]] = {1: _upgrade_from_1, 2: _upgrade_from_2}


class CheckpointVersionError(CheckpointError):
    """The checkpoint is of a version this plugin does not read: newer (a downgrade),
    or older than the oldest it has an upgrade step for.

    Not corrupt: the plugin refuses to start (exit status 1) and leaves the file
    alone, whatever it holds, so no GPU a prepared claim holds is forgotten.
    Retrying does not help; running a plugin that reads the version (rolling
    forward), or draining the node and moving the file aside, does.
    ``version`` is the file's; ``path`` is set once the store knows the file.
    """

    def __init__(self, message: str, *, version: int, path: Path | None = None) -> None:
        self.version = version
        self.path = path
        super().__init__(message)


def spec_digest(content: bytes) -> str:
    """What ``cdiSpecDigest`` records for a spec file's bytes: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(content).hexdigest()


class StateFileModel(BaseModel):
    """The base of the models of the plugin's state files (this checkpoint, the taint state
    of :mod:`api.taint_state`): camelCase on disk, strict, unknown fields refused, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class SharingRecord(StateFileModel):
    """How a prepared GPU is shared (merged config with defaults); absent: exclusive."""

    strategy: str
    time_slice_interval: str | None = None
    mps_active_thread_percentage: int | None = None
    mps_pinned_memory_limit_bytes: int | None = None


class MigRecord(StateFileModel):
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


class DeviceRecord(StateFileModel):
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


class DeviceMetadataRecord(StateFileModel):
    """The claim's device metadata files were written and its spec mounts them."""

    pod_claim_name: str | None = None
    """The pod's name for a claim made from a template; None for a claim the pod names."""


class ClaimEntry(StateFileModel):
    """One claim this node prepared or started to prepare."""

    namespace: str
    name: str
    state: ClaimState
    boot_id: str
    """Boot in which the state was reached (``/proc/sys/kernel/random/boot_id``)."""
    cdi_spec_path: str
    devices: tuple[DeviceRecord, ...]
    cdi_spec_digest: str | None = None
    """:func:`spec_digest` of the spec as written; None before it is (or from version 1)."""
    device_metadata: DeviceMetadataRecord | None = None
    """Set when the claim's device metadata files are written (version 3)."""


class Checkpoint(StateFileModel):
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

    Raises CheckpointVersionError for a version newer than this code or older
    than the oldest step of ``upgrades``, and CheckpointError for anything else
    that is not a checkpoint (not JSON, no integer version, a field of the
    wrong type).
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
    oldest = _oldest_readable(upgrades)
    if version > CHECKPOINT_VERSION:
        raise CheckpointVersionError(
            f"checkpoint version {version} was written by a newer plugin; this one reads "
            f"versions {oldest} to {CHECKPOINT_VERSION}",
            version=version,
        )
    if version < oldest:
        raise CheckpointVersionError(
            f"checkpoint version {version} is older than this plugin reads (versions "
            f"{oldest} to {CHECKPOINT_VERSION})",
            version=version,
        )
    while version < CHECKPOINT_VERSION:
        document = upgrades[version](document)  # every step from ``oldest`` on is there
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


def _oldest_readable(upgrades: Mapping[int, Upgrade]) -> int:
    """The oldest version ``upgrades`` leads to the current one from, without a gap."""
    oldest = CHECKPOINT_VERSION
    while oldest - 1 in upgrades:
        oldest -= 1
    return oldest
