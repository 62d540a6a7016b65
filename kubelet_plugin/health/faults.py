"""Faults injected into the mock backend from another process, through files.

The component tests, or a person trying the driver, drop JSON files with
:func:`write_fault`; a :class:`FaultSpool` queues them into the mock backend.

The file format, in this one place. Each ``<name>.json`` in the fault directory
(``--mock-faults-dir``, default ``<plugin dir>/faults``) is one JSON object;
``gpu`` is a GPU UUID or device name (``gpu-0``):

=================== ============================================ ==========================
``kind``            other fields                                 what NVML would do
=================== ============================================ ==========================
``xid``             ``gpu``, ``xid``, ``recoveryAction``?        an XID critical error
``ecc-double-bit``  ``gpu``, ``recoveryAction``?                 an ECC error event
``ecc-single-bit``  ``gpu``, ``recoveryAction``?
``gpu-lost``        ``gpu``? (none: every GPU)                   GPU_IS_LOST
``recovery-action`` ``gpu``, ``action``                          field 230 reads ``action``
``reset``           ``gpu``                                      a GPU reset: field 230
                                                                 reads NONE, GPU validates
``invalid``         ``gpu``, ``problem`` (null: valid again)     the GPU fails validation
``recovery-field``  ``supported`` (true/false)                   false: an older driver
                                                                 (NOT_SUPPORTED)
=================== ============================================ ==========================

``action`` and ``recoveryAction`` are the names of
:class:`~dra_driver.discovery.model.RecoveryAction` (``NONE``, ``GPU_RESET``,
``NODE_REBOOT``, ``DRAIN_P2P``, ``DRAIN_AND_RESET``, ``RECOVER_IMEX_DOMAIN``,
``BUS_RESET``, ``SYSTEM_REBOOT``); ``recoveryAction`` on an event sets the field
before the event is queued, as the driver does. A file named ``boot_id`` in the
directory stands in for ``/proc/sys/kernel/random/boot_id`` when the plugin starts
(:func:`mock_boot_id`): write another one and restart the plugin to play a reboot.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final, Literal, get_args

from api.errors import InvalidInputError
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import HealthEvent, RecoveryAction

__all__ = ["BOOT_ID_FILE", "FaultKind", "FaultSpool", "mock_boot_id", "write_fault"]

log = logging.getLogger(__name__)

_FAULT_SUFFIX: Final = ".json"
_REJECTED_SUFFIX: Final = ".rejected"
#: The mock node's boot ID, in the fault directory (module docstring).
BOOT_ID_FILE: Final = "boot_id"

FaultKind = Literal[
    "xid",
    "ecc-double-bit",
    "ecc-single-bit",
    "gpu-lost",
    "recovery-action",
    "reset",
    "invalid",
    "recovery-field",
]


def mock_boot_id(directory: Path) -> str | None:
    """The boot ID the mock node plays (``<directory>/boot_id``); None when there is none."""
    try:
        text = (directory / BOOT_ID_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def write_fault(
    directory: Path,
    kind: FaultKind,
    *,
    gpu: str | None = None,
    xid: int | None = None,
    **fields: object,
) -> Path:
    """Drop one fault for a :class:`FaultSpool` to pick up; returns the file.

    ``gpu`` is a GPU UUID or device name (``gpu-0``); None with ``gpu-lost``
    means every GPU. ``xid`` is required for ``xid``; ``fields`` are the other
    fields of the kind (module docstring), e.g. ``recoveryAction="GPU_RESET"``.
    The file appears whole (written to a temp name, then renamed); names sort in
    writing order.
    """
    document: dict[str, Any] = {"kind": kind, **fields}
    if gpu is not None:
        document["gpu"] = gpu
    if xid is not None:
        document["xid"] = xid
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}{_FAULT_SUFFIX}"
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
    path = directory / name
    os.replace(temp, path)
    return path


class FaultSpool:
    """A :class:`HealthEventSource` for the mock backend that also takes faults from files.

    Each ``*.json`` file in ``directory`` is one fault (the format is in the module
    docstring), e.g. ``{"kind": "xid", "gpu": "gpu-0", "xid": 79}``. Files are taken
    in name order, removed, and queued into the backend as its ``inject_*`` methods
    would (recovery faults set its :attr:`~MockBackend.recovery` state at once); a
    file that is not a valid fault is renamed to ``<name>.rejected`` with an
    error log saying why. The directory is looked at every ``poll_s`` seconds
    while :meth:`wait_health_event` waits.
    """

    def __init__(self, backend: MockBackend, directory: Path, *, poll_s: float = 0.2) -> None:
        self._backend = backend
        self.directory = directory
        self._poll_s = poll_s

    def ensure_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def collect(self) -> int:
        """Queue the faults waiting in the directory; returns how many were queued."""
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(self.directory)
                if entry.name.endswith(_FAULT_SUFFIX) and not entry.name.startswith(".")
            )
        except FileNotFoundError:
            return 0
        queued = 0
        for name in names:
            path = self.directory / name
            try:
                document = json.loads(path.read_text())
                self._inject(document, _written_at(name))
            except FileNotFoundError:
                continue  # taken by someone else
            except (ValueError, TypeError, InvalidInputError) as err:
                log.error("fault file %s rejected: %s", path, err)
                path.replace(path.with_name(name + _REJECTED_SUFFIX))
                continue
            path.unlink(missing_ok=True)
            queued += 1
        return queued

    def _gpu_uuid(self, ref: object) -> str:
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"'gpu' must be a GPU UUID or device name, not {ref!r}")
        gpu = self._backend.inventory.gpu_by_name(ref)
        return gpu.uuid if gpu is not None else ref

    def _inject(self, document: object, occurred_at: float | None = None) -> None:
        if not isinstance(document, dict):
            raise ValueError('a fault is a JSON object such as {"kind": "xid", ...}')
        kind = document.get("kind")
        gpu = document.get("gpu")
        recovery = self._backend.recovery
        if kind in ("recovery-action", "reset", "invalid", "recovery-field"):
            if kind == "recovery-field":
                supported = document.get("supported")
                if not isinstance(supported, bool):
                    raise ValueError(f"'supported' must be true or false, not {supported!r}")
                recovery.set_supported(supported)
            elif kind == "recovery-action":
                recovery.set_action(self._gpu_uuid(gpu), _action(document.get("action")))
            elif kind == "reset":
                recovery.reset(self._gpu_uuid(gpu))
            else:
                problem = document.get("problem")
                if problem is not None and not isinstance(problem, str):
                    raise ValueError(f"'problem' must be a text or null, not {problem!r}")
                recovery.set_invalid(self._gpu_uuid(gpu), problem)
            return
        if document.get("recoveryAction") is not None:
            recovery.set_action(self._gpu_uuid(gpu), _action(document["recoveryAction"]))
        if kind == "xid":
            xid = document.get("xid")
            if not isinstance(xid, int) or isinstance(xid, bool):
                raise ValueError(f"'xid' must be a number, not {xid!r}")
            self._backend.inject_xid(self._gpu_uuid(gpu), xid, occurred_at=occurred_at)
        elif kind in ("ecc-double-bit", "ecc-single-bit"):
            self._backend.inject_ecc(
                self._gpu_uuid(gpu), double_bit=kind == "ecc-double-bit", occurred_at=occurred_at
            )
        elif kind == "gpu-lost":
            self._backend.inject_gpu_lost(
                None if gpu is None else self._gpu_uuid(gpu), occurred_at=occurred_at
            )
        else:
            kinds = ", ".join(get_args(FaultKind))
            raise ValueError(f"unknown fault kind {kind!r}: use {kinds}")

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            self.collect()
            remaining = deadline - time.monotonic()
            event = self._backend.wait_health_event(min(max(remaining, 0.0), self._poll_s))
            if event is not None or remaining <= self._poll_s:
                return event


def _action(name: object) -> RecoveryAction:
    if isinstance(name, str) and name in RecoveryAction.__members__:
        return RecoveryAction[name]
    raise ValueError(
        f"unknown recovery action {name!r}: use {', '.join(RecoveryAction.__members__)}"
    )


def _written_at(name: str) -> float | None:
    """When :func:`write_fault` wrote the file (its name starts with the time in ns)."""
    stamp = name.partition("-")[0]
    return int(stamp) / 1e9 if stamp.isdigit() else None
