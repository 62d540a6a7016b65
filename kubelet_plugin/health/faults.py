"""Faults injected into the mock backend from another process, through files.

The component tests, or a person trying the driver, drop JSON files with
:func:`write_fault`; a :class:`FaultSpool` queues them into the mock backend.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final, get_args

from api.errors import InvalidInputError
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import HealthEvent, HealthEventKind

__all__ = ["FaultSpool", "write_fault"]

log = logging.getLogger(__name__)

_FAULT_SUFFIX: Final = ".json"
_REJECTED_SUFFIX: Final = ".rejected"


def write_fault(
    directory: Path,
    kind: HealthEventKind,
    *,
    gpu: str | None = None,
    xid: int | None = None,
) -> Path:
    """Drop one fault for a :class:`FaultSpool` to pick up; returns the file.

    ``gpu`` is a GPU UUID or device name (``gpu-0``); None with ``gpu-lost``
    means every GPU. ``xid`` is required for ``xid``. The file appears whole
    (written to a temp name, then renamed); names sort in writing order.
    """
    document: dict[str, Any] = {"kind": kind}
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

    Each ``*.json`` file in ``directory`` is one fault:
    ``{"kind": "xid", "gpu": "gpu-0", "xid": 79}`` (kinds: ``xid``,
    ``ecc-double-bit``, ``ecc-single-bit``, ``gpu-lost``; ``gpu`` a UUID or a
    device name, optional for ``gpu-lost``). Files are taken in name order,
    removed, and queued into the backend as its ``inject_*`` methods would; a
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
                self._inject(document)
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

    def _inject(self, document: object) -> None:
        if not isinstance(document, dict):
            raise ValueError('a fault is a JSON object such as {"kind": "xid", ...}')
        kind = document.get("kind")
        gpu = document.get("gpu")
        if kind == "xid":
            xid = document.get("xid")
            if not isinstance(xid, int) or isinstance(xid, bool):
                raise ValueError(f"'xid' must be a number, not {xid!r}")
            self._backend.inject_xid(self._gpu_uuid(gpu), xid)
        elif kind in ("ecc-double-bit", "ecc-single-bit"):
            self._backend.inject_ecc(self._gpu_uuid(gpu), double_bit=kind == "ecc-double-bit")
        elif kind == "gpu-lost":
            self._backend.inject_gpu_lost(None if gpu is None else self._gpu_uuid(gpu))
        else:
            kinds = ", ".join(get_args(HealthEventKind))
            raise ValueError(f"unknown fault kind {kind!r}: use {kinds}")

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            self.collect()
            remaining = deadline - time.monotonic()
            event = self._backend.wait_health_event(min(max(remaining, 0.0), self._poll_s))
            if event is not None or remaining <= self._poll_s:
                return event
