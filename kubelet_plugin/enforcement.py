"""The seam between the driver and what enforces a GPU's sharing settings on the node.

A :class:`SharingEnforcer` (the MPS control daemons, :mod:`kubelet_plugin.mps`;
the time-slice setting, :mod:`kubelet_plugin.time_slicing`) is told which
claims hold which GPUs with which settings: :meth:`~SharingEnforcer.hold` at
prepare, before the kubelet hears of success; :meth:`~SharingEnforcer.release`
at unprepare and when a prepare is undone; :meth:`~SharingEnforcer.start` once,
after start-up recovery, with the prepared claims; :meth:`~SharingEnforcer.sync`
when another plugin instance on the node (rolling update) may have changed the
checkpoint. :class:`Enforcers` runs several as one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from api.checkpoint import ClaimEntry, SharingRecord
from api.resource_v1 import ResourceClaim
from dra_driver.cdi import SharingSettings

__all__ = ["Enforcers", "GpuShare", "SharingEnforcer", "prepared_shares"]

#: One GPU a claim holds shared: its UUID and its merged settings.
GpuShare = tuple[str, SharingSettings]


class SharingEnforcer(Protocol):
    def hold(
        self,
        claim_uid: str,
        label: str,
        shares: Sequence[GpuShare],
        *,
        claim: ResourceClaim | None = None,
    ) -> None:
        """Apply what ``shares`` ask for, with this claim among the GPUs' holders.

        ``claim`` is the claim as read for this prepare (the MPS daemons check the
        user ID of the pods it is reserved for). Idempotent. Raises
        :class:`api.errors.PrepareError` (naming ``label``) when it cannot: the
        prepare fails and is undone."""

    def release(self, claim_uid: str) -> None:
        """Drop the claim from its GPUs' holders; undo what nobody holds. Never raises."""

    def start(self, entries: Mapping[str, ClaimEntry]) -> None:
        """Take over the prepared claims in ``entries`` at start-up. Never raises."""

    def sync(self, entries: Mapping[str, ClaimEntry]) -> None:
        """Another plugin instance on the node (rolling update) changed the checkpoint:
        take the holders from ``entries``, the prepared claims now. Never raises."""

    def close(self) -> None:
        """The plugin is stopping; what running pods use stays."""


def _settings(record: SharingRecord) -> SharingSettings:
    return SharingSettings(
        strategy=record.strategy,
        time_slice_interval=record.time_slice_interval,
        mps_active_thread_percentage=record.mps_active_thread_percentage,
        mps_pinned_memory_limit_bytes=record.mps_pinned_memory_limit_bytes,
    )


def prepared_shares(entries: Mapping[str, ClaimEntry]) -> dict[str, list[GpuShare]]:
    """The shared GPUs of the prepared (``PrepareCompleted``) claims, by claim UID."""
    shares: dict[str, list[GpuShare]] = {}
    for uid, entry in entries.items():
        if entry.state != "PrepareCompleted":
            continue
        found = [(d.uuid, _settings(d.sharing)) for d in entry.devices if d.sharing and d.uuid]
        if found:
            shares[uid] = found
    return shares


class Enforcers:
    """Several enforcers as one: held in order, a failure releases those already held."""

    def __init__(self, enforcers: Sequence[SharingEnforcer] = ()) -> None:
        self._enforcers = tuple(enforcers)

    def hold(
        self,
        claim_uid: str,
        label: str,
        shares: Sequence[GpuShare],
        *,
        claim: ResourceClaim | None = None,
    ) -> None:
        held: list[SharingEnforcer] = []
        try:
            for enforcer in self._enforcers:
                enforcer.hold(claim_uid, label, shares, claim=claim)
                held.append(enforcer)
        except BaseException:
            for enforcer in held:
                enforcer.release(claim_uid)
            raise

    def release(self, claim_uid: str) -> None:
        for enforcer in self._enforcers:
            enforcer.release(claim_uid)

    def start(self, entries: Mapping[str, ClaimEntry]) -> None:
        for enforcer in self._enforcers:
            enforcer.start(entries)

    def sync(self, entries: Mapping[str, ClaimEntry]) -> None:
        for enforcer in self._enforcers:
            enforcer.sync(entries)

    def close(self) -> None:
        for enforcer in self._enforcers:
            enforcer.close()
