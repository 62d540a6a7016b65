"""The time slice of GPUs shared with TimeSlicing, applied with ``nvidia-smi``.

``timeSlicingConfig.interval`` (Default, Short, Medium, Long) is GPU-wide and
NVML has no setter, so the plugin runs the driver's ``nvidia-smi compute-policy
-i <UUID> --set-timeslice <0-3>`` when the first claim on a GPU is prepared,
keeps which claims hold the GPU, refuses a claim that wants another interval
on a GPU already set (a prepare error naming both), and sets Default (0) again
when the last claim leaves. At start-up the prepared claims' intervals are set
again (a reboot resets them; setting one twice is harmless).

Applied only on real GPUs: with the mock backend there is no GPU for
``nvidia-smi`` to set, and the interval stays what it always was there, an
``DRA_GPU_<key>_TIME_SLICE_INTERVAL`` variable.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from api.checkpoint import ClaimEntry
from api.errors import PrepareError
from api.gpu_config import INTERVAL_DEFAULT, STRATEGY_TIME_SLICING, TIME_SLICE_INTERVALS
from api.resource_v1 import ResourceClaim, claim_label
from kubelet_plugin.enforcement import GpuShare, prepared_shares

__all__ = ["NVIDIA_SMI", "TimeSlicePolicy"]

log = logging.getLogger(__name__)

NVIDIA_SMI: Final = "nvidia-smi"
COMMAND_TIMEOUT_S: Final = 30.0


class TimeSlicePolicy:
    """A :class:`~kubelet_plugin.enforcement.SharingEnforcer` for TimeSlicing; thread-safe.

    ``nvidia_smi`` is the driver's binary as this process sees it; None (not
    found): a TimeSlicing claim gets a prepare error saying so.
    """

    def __init__(self, nvidia_smi: Path | None, *, library_path: str | None = None) -> None:
        self._binary = nvidia_smi
        self._library_path = library_path
        self._lock = threading.Lock()
        # GPU UUID -> claim UID -> (claim label, interval)
        self._holders: dict[str, dict[str, tuple[str, str]]] = {}

    def intervals(self) -> dict[str, str]:
        """The interval each held GPU is set to."""
        with self._lock:
            return {uuid: next(iter(h.values()))[1] for uuid, h in self._holders.items()}

    def hold(
        self,
        claim_uid: str,
        label: str,
        shares: Sequence[GpuShare],
        *,
        claim: ResourceClaim | None = None,
    ) -> None:
        wanted = {
            uuid: s.time_slice_interval or INTERVAL_DEFAULT
            for uuid, s in shares
            if s.strategy == STRATEGY_TIME_SLICING
        }
        if not wanted:
            return
        if self._binary is None:
            raise PrepareError(
                f"asks for TimeSlicing on {', '.join(wanted)}, but no {NVIDIA_SMI} was found "
                "under the driver root to set the time slice: install the driver's tools there",
                claim=label,
            )
        with self._lock:
            for uuid, interval in wanted.items():
                others = {
                    c: held for c, held in self._holders.get(uuid, {}).items() if c != claim_uid
                }
                clash = [f"{lbl} ({i})" for lbl, i in others.values() if i != interval]
                if clash:
                    raise PrepareError(
                        f"sharing.timeSlicingConfig.interval: {interval} on GPU {uuid}, which "
                        f"{', '.join(sorted(clash))} holds with another interval; the time "
                        "slice is GPU-wide: use the same interval, or a GPU of its own",
                        claim=label,
                    )
            for uuid, interval in wanted.items():
                if not self._holders.get(uuid):
                    self._set(uuid, interval, label)
                self._holders.setdefault(uuid, {})[claim_uid] = (label, interval)

    def release(self, claim_uid: str) -> None:
        with self._lock:
            for uuid in [u for u, h in self._holders.items() if claim_uid in h]:
                label, interval = self._holders[uuid].pop(claim_uid)
                if self._holders[uuid]:
                    continue
                del self._holders[uuid]
                if interval != INTERVAL_DEFAULT:
                    try:
                        self._set(uuid, INTERVAL_DEFAULT, label)
                    except PrepareError as err:
                        log.error("resetting the time slice: %s", err)

    def start(self, entries: Mapping[str, ClaimEntry]) -> None:
        if self._binary is None:
            return
        with self._lock:
            self._holders = _prepared_holders(entries)
            for uuid, holders in self._holders.items():
                label, interval = next(iter(holders.values()))
                try:
                    self._set(uuid, interval, label)
                except PrepareError as err:
                    log.error("setting the time slice again at start-up: %s", err)

    def sync(self, entries: Mapping[str, ClaimEntry]) -> None:
        """Take the holders from ``entries`` (another plugin instance set or reset what its
        claims needed: nothing to run here)."""
        with self._lock:
            self._holders = _prepared_holders(entries)

    def close(self) -> None:
        """Nothing runs: the time slice stays set for the running pods."""

    def _set(self, uuid: str, interval: str, label: str) -> None:
        assert self._binary is not None
        argv = [str(self._binary), "compute-policy", "-i", uuid, "--set-timeslice"]
        argv.append(str(TIME_SLICE_INTERVALS[interval]))
        env = {"PATH": "/usr/bin:/bin"}
        if self._library_path:
            env["LD_LIBRARY_PATH"] = self._library_path
        try:
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise PrepareError(
                f"setting the time slice of GPU {uuid}: {err}", claim=label, retryable=True
            ) from err
        if done.returncode != 0:
            raise PrepareError(
                f"{' '.join(argv[1:])} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}",
                claim=label,
                retryable=True,
            )
        log.info("GPU %s: time slice set to %s for %s", uuid, interval, label)


def _prepared_holders(entries: Mapping[str, ClaimEntry]) -> dict[str, dict[str, tuple[str, str]]]:
    """GPU UUID -> claim UID -> (label, interval), for the time-sliced GPUs of prepared claims."""
    holders: dict[str, dict[str, tuple[str, str]]] = {}
    for uid, shares in prepared_shares(entries).items():
        label = claim_label(entries[uid].namespace, entries[uid].name)
        for uuid, settings in shares:
            if settings.strategy == STRATEGY_TIME_SLICING:
                interval = settings.time_slice_interval or INTERVAL_DEFAULT
                holders.setdefault(uuid, {})[uid] = (label, interval)
    return holders
