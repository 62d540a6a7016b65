"""The kubelet plugin's health taints on disk: a versioned schema of their own.

The file (``<plugin dir>/taints.json``) is JSON::

    {
      "version": 1,
      "bootId": "5a0c...",
      "gpus": {
        "gpu-1": {
          "uuid": "GPU-...",
          "lastEvent": "2026-11-27T10:00:00Z",
          "lost": false,
          "taints": [
            {"key": "gpu.dra-driver.io/xid", "value": "79", "effect": "NoSchedule",
             "timeAdded": "2026-11-27T10:00:00Z",
             "cause": {"kind": "xid", "xid": 79, "gpuUuid": "GPU-...",
                       "seenAt": "2026-11-27T10:00:00Z"}}
          ]
        }
      }
    }

One entry per tainted GPU, keyed by its device name (``gpu-<minor>``), with
the UUID it had: an entry whose GPU now has another UUID belongs to a GPU that
is gone. ``lastEvent`` starts the recovery window again after a restart;
``cause`` is the health event that raised (or last changed) the taint, or
``state-unreadable`` for the taint that stands in for a file that could not be
read. ``bootId`` is the boot the file was written in. ``awaitingReboot`` (optional,
written only when true) marks a GPU whose taints wait for a reboot.

Compatibility: version 1 is the first; ``awaitingReboot`` was added to it as an
optional field (a file without it reads as before, and a file with it is written
only while a GPU waits for a reboot). A file of another version is not read
(see :class:`TaintStateError`); the plugin keeps its GPUs tainted rather than
guess.
"""

from __future__ import annotations

import json
from typing import Final, Literal, TypeAlias

from pydantic import Field, ValidationError

from api.checkpoint import StateFileModel
from api.errors import CheckpointError

__all__ = [
    "NVLINK_PEER_DRAIN",
    "STATE_UNREADABLE",
    "TAINT_STATE_VERSION",
    "CauseKind",
    "GpuTaints",
    "PersistedTaint",
    "TaintCause",
    "TaintState",
    "TaintStateError",
    "decode_taint_state",
    "encode_taint_state",
]

#: The schema version this code writes and reads.
TAINT_STATE_VERSION: Final = 1
#: The cause of the taint that stands in for a taint file the plugin could not read.
STATE_UNREADABLE: Final = "state-unreadable"
#: The cause of the taint a GPU's NVLink peer gets while NVML asks that GPU for DRAIN_P2P.
NVLINK_PEER_DRAIN: Final = "nvlink-peer-drain"

CauseKind: TypeAlias = Literal[
    "xid", "ecc-double-bit", "ecc-single-bit", "gpu-lost", "state-unreadable", "nvlink-peer-drain"
]


class TaintStateError(CheckpointError):
    """The taint file cannot be read: not JSON, not this schema, or another version.

    The kubelet plugin moves it aside, logs this error naming both paths, and
    taints every GPU ``NoSchedule`` (key ``<driver>/taint-state-unreadable``)
    until an admin clears it: a retry does not help, ``dra-driver taints clear``
    does once the GPUs are known to be sound.
    """


class TaintCause(StateFileModel):
    """The health event behind a taint."""

    kind: CauseKind
    xid: int | None = None
    gpu_uuid: str | None = None
    """The GPU (or MIG device) the event named; None: every GPU (a lost GPU without a UUID).
    For ``nvlink-peer-drain``: the GPU whose DRAIN_P2P fenced this one."""
    seen_at: str
    """When the plugin saw the event, RFC 3339 UTC."""
    detail: str | None = None
    """Free text for people (e.g. why the file was unreadable)."""


class PersistedTaint(StateFileModel):
    """One device taint as published, and its cause."""

    key: str
    value: str | None = None
    effect: str
    time_added: str
    cause: TaintCause


class GpuTaints(StateFileModel):
    """The taints of one GPU (its MIG devices carry them too)."""

    uuid: str
    last_event: str | None = None
    """The latest event on the GPU (RFC 3339); the recovery window runs from it."""
    lost: bool = False
    awaiting_reboot: bool | None = None
    """True: NVML asked for a reboot (or the fault needs one and the driver reports no
    recovery action); the taints stay until the boot ID changes. Left out when not
    (so a file without it, and a plugin that does not know it, read the same)."""
    taints: tuple[PersistedTaint, ...] = ()


class TaintState(StateFileModel):
    """Every tainted GPU of the node, keyed by device name, and the boot it was written in."""

    version: int = TAINT_STATE_VERSION
    boot_id: str = ""
    gpus: dict[str, GpuTaints] = Field(default_factory=dict)


def decode_taint_state(data: bytes) -> TaintState:
    """Read a taint file; raises TaintStateError for anything but a version-1 file."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TaintStateError(f"taint file is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise TaintStateError(f"taint file must be a JSON object, not {type(document).__name__}")
    version = document.get("version")
    if version != TAINT_STATE_VERSION:
        raise TaintStateError(
            f"taint file version {version!r} is not the one this plugin reads "
            f"({TAINT_STATE_VERSION})"
        )
    try:
        # JSON-mode validation: strict, yet JSON arrays fill the tuple fields.
        return TaintState.model_validate_json(json.dumps(document))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise TaintStateError(f"taint file field {where}: {first['msg']}") from None


def encode_taint_state(state: TaintState) -> bytes:
    """The file's bytes: compact JSON, keys sorted (equal states give equal bytes)."""
    document = state.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
