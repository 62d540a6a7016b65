"""A NodeDriver fake whose answers and failures each test configures."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubelet_plugin.node_driver import ClaimRef, PreparedDevice, PrepareResult

DRIVER = "gpu.example.com"
POOL = "node-a"


def devices_for(claim: ClaimRef) -> tuple[PreparedDevice, ...]:
    """What the fake prepares for a claim: one GPU for request ``gpu`` (allocated
    through subrequest ``gpu/large``) and one for ``extra``, with a share ID."""
    return (
        PreparedDevice(
            requests=("gpu/large",),
            pool=POOL,
            device="gpu-0",
            cdi_device_ids=(f"{DRIVER}/gpu={claim.uid}-gpu-0",),
        ),
        PreparedDevice(
            requests=("extra",),
            pool=POOL,
            device="gpu-1",
            cdi_device_ids=(f"{DRIVER}/gpu={claim.uid}-gpu-1", f"{DRIVER}/gpu=common"),
            share_id="share-1",
        ),
    )


@dataclass
class FakeNodeDriver:
    """Thread-safe. Each knob names claim UIDs:

    ``errors``: uid -> message answered for that claim (prepare and unprepare);
    ``raise_for``: a call containing one of these raises RuntimeError;
    ``omit``: left out of the answer (a driver bug the plugin must cover);
    ``barrier``: every prepare waits on it first (proves concurrent calls);
    ``gate``: every prepare waits until it is set (a slow driver).
    """

    errors: dict[str, str] = field(default_factory=dict)
    raise_for: set[str] = field(default_factory=set)
    omit: set[str] = field(default_factory=set)
    barrier: threading.Barrier | None = None
    gate: threading.Event | None = None
    prepare_calls: list[tuple[str, ...]] = field(default_factory=list)
    unprepare_calls: list[tuple[str, ...]] = field(default_factory=list)
    prepared: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        with self._lock:
            self.prepare_calls.append(tuple(c.uid for c in claims))
        if self.barrier is not None:
            self.barrier.wait()
        if self.gate is not None:
            self.gate.wait()
        if self.raise_for & {c.uid for c in claims}:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        results: dict[str, PrepareResult] = {}
        for claim in claims:
            if claim.uid in self.omit:
                continue
            if claim.uid in self.errors:
                results[claim.uid] = PrepareResult(error=self.errors[claim.uid])
                continue
            results[claim.uid] = PrepareResult(devices=devices_for(claim))
            with self._lock:
                self.prepared.add(claim.uid)
        return results

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        with self._lock:
            self.unprepare_calls.append(tuple(c.uid for c in claims))
        if self.raise_for & {c.uid for c in claims}:
            raise RuntimeError("checkpoint is read-only")
        results: dict[str, str | None] = {}
        for claim in claims:
            if claim.uid in self.omit:
                continue
            if claim.uid in self.errors:
                results[claim.uid] = self.errors[claim.uid]
                continue
            with self._lock:
                self.prepared.discard(claim.uid)  # unknown claims: nothing to do
            results[claim.uid] = None
        return results


def claim(n: int, namespace: str = "default") -> ClaimRef:
    return ClaimRef(namespace=namespace, name=f"claim-{n}", uid=f"uid-{n:04d}")
