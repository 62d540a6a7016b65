"""Opt-in GPU reset once a drained GPU is idle: :class:`AutoReset` (``--auto-reset``).

Off by default. When on, at each poll a GPU is reset when all of these hold:

- NVML's recovery action (field 230) reads ``GPU_RESET``, ``DRAIN_AND_RESET`` or
  ``DRAIN_P2P`` (:data:`RESET_ACTIONS`; the drain is the NoExecute taint's eviction);
- the GPU carries a ``NoExecute`` taint of its own, so pods are being evicted;
- no claim this plugin prepared (or is preparing) holds the GPU or one of its MIG devices;
- NVML lists no compute process on the GPU or on any of its MIG devices.

The reset is ``nvidia-smi --gpu-reset -i <UUID>`` (the ``nvidia-smi`` the host scan found,
:func:`~kubelet_plugin.sharing_tools.driver_tool`), or the mock backend's reset; the
recovery gate then sees the action read NONE and lifts the taints as usual. Each poll's
outcome per GPU is logged once per change and counted (:data:`Outcome`: ``reset``,
``failed``, ``waiting-claims``, ``waiting-processes``), naming the claims or the MIG
instances and PIDs that keep it waiting. A failed reset is not tried again until the
action changes or the taints are lifted (an operator takes over). A GPU in use is never
reset: a claim or a process seen at the poll keeps it waiting.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from api import limits
from api.checkpoint import ClaimEntry
from api.errors import DraDriverError
from api.resource_v1 import DeviceTaint
from api.taint_state import NVLINK_PEER_DRAIN
from dra_driver.cdi import HostFiles
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import (
    DiscoveryBackend,
    Gpu,
    NodeInventory,
    RecoveryAction,
    RecoveryProbe,
)
from dra_driver.discovery.processes import ProcessSampler
from kubelet_plugin.settings import Settings
from kubelet_plugin.sharing_tools import driver_library_path, driver_tool
from kubelet_plugin.time_slicing import NVIDIA_SMI

__all__ = [
    "RESET_ACTIONS",
    "AutoReset",
    "AutoResetParts",
    "Outcome",
    "auto_reset_for",
    "nvidia_smi_reset",
]

log = logging.getLogger(__name__)

Outcome = Literal["reset", "failed", "waiting-claims", "waiting-processes"]

#: The recovery actions a GPU reset answers (after the drain for the DRAIN_ ones).
RESET_ACTIONS: Final = frozenset(
    {RecoveryAction.GPU_RESET, RecoveryAction.DRAIN_AND_RESET, RecoveryAction.DRAIN_P2P}
)
RESET_TIMEOUT_S: Final = 120.0


def nvidia_smi_reset(binary: Path, library_path: str | None) -> Callable[[Gpu], None]:
    """A reset that runs ``<binary> --gpu-reset -i <UUID>``; raises OSError when it fails."""

    def reset(gpu: Gpu) -> None:
        env = {"PATH": "/usr/bin:/bin"}
        if library_path:
            env["LD_LIBRARY_PATH"] = library_path
        argv = [str(binary), "--gpu-reset", "-i", gpu.uuid]
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=RESET_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise OSError(f"{' '.join(argv)} did not end within {RESET_TIMEOUT_S:g} s") from err
        if done.returncode != 0:
            raise OSError(
                f"{' '.join(argv)} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )

    return reset


@dataclass(frozen=True, slots=True)
class AutoResetParts:
    """What the plugin's :class:`AutoReset` is made of, besides the settings and the
    probe: the GPU backend (processes; the mock's reset), the host scan (``nvidia-smi``)
    and the prepared claims."""

    backend: DiscoveryBackend
    host: HostFiles
    claims: Callable[[], Mapping[str, ClaimEntry]]


def auto_reset_for(
    settings: Settings,
    inventory: NodeInventory,
    probe: RecoveryProbe | None,
    parts: AutoResetParts,
    on_outcome: Callable[[Outcome], None],
) -> AutoReset | None:
    """The plugin's :class:`AutoReset` with ``--auto-reset``; None without it, or (logged)
    when the backend reads no recovery action, lists no processes or no ``nvidia-smi`` is
    found: then nothing is reset."""
    if not settings.auto_reset:
        return None
    backend = parts.backend
    if probe is None or not isinstance(backend, ProcessSampler):
        log.error(
            "--auto-reset: the GPU backend reads no recovery action or lists no compute "
            "processes: no GPU is reset automatically"
        )
        return None
    reset: Callable[[Gpu], None]
    if isinstance(backend, MockBackend):
        recovery = backend.recovery
        reset = lambda gpu: recovery.reset(gpu.uuid)  # noqa: E731
    else:
        binary = driver_tool(parts.host, settings.driver_root, NVIDIA_SMI)
        if binary is None:
            log.error(
                "--auto-reset: no %s under the driver root %s: no GPU is reset automatically",
                NVIDIA_SMI,
                settings.driver_root,
            )
            return None
        reset = nvidia_smi_reset(binary, driver_library_path(parts.host, settings.driver_root))
    log.info("--auto-reset: a drained, idle GPU whose recovery action asks for a reset is reset")
    return AutoReset(
        inventory=inventory,
        probe=probe,
        claims=parts.claims,
        processes=backend,
        reset=reset,
        on_outcome=on_outcome,
    )


def _own_gpu(gpu: Gpu, device: str) -> bool:
    return device == gpu.device_name or device.startswith(gpu.device_name + "-")


class AutoReset:
    """Resets drained, idle GPUs (module docstring); :meth:`poll` from one thread.

    ``claims`` returns the plugin's claim entries by UID; ``processes`` lists NVML's
    compute processes; ``reset`` resets one GPU (raises OSError when it failed);
    ``on_outcome`` (metrics) hears each outcome logged.
    """

    def __init__(
        self,
        *,
        inventory: NodeInventory,
        probe: RecoveryProbe,
        claims: Callable[[], Mapping[str, ClaimEntry]],
        processes: ProcessSampler,
        reset: Callable[[Gpu], None],
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._inventory = inventory
        self._probe = probe
        self._claims = claims
        self._processes = processes
        self._reset = reset
        self._on_outcome = on_outcome
        self._known = {g.uuid for g in inventory} | {
            m.uuid for g in inventory for m in g.mig_devices
        }
        self._said: dict[str, str] = {}  # GPU name -> the last outcome logged
        self._failed: dict[str, RecoveryAction] = {}  # GPU name -> the action it failed at

    def run(
        self,
        taints: Callable[[], Mapping[str, Sequence[DeviceTaint]]],
        stop: threading.Event,
        *,
        poll_s: float = 5.0,
    ) -> None:
        """:meth:`poll` the monitor's ``taints`` every ``poll_s`` until ``stop`` is set."""
        while not stop.wait(poll_s):
            self.poll(taints())

    def poll(self, taints: Mapping[str, Sequence[DeviceTaint]]) -> list[str]:
        """Reset each GPU that is due and idle; the GPU names reset."""
        done = []
        for gpu in self._inventory:
            action = self._due(gpu, taints.get(gpu.device_name, ()))
            if action is not None and self._try(gpu, action):
                done.append(gpu.device_name)
        return done

    def _due(self, gpu: Gpu, taints: Iterable[DeviceTaint]) -> RecoveryAction | None:
        evicting = any(
            t.effect == limits.TAINT_EFFECT_NO_EXECUTE
            and not t.key.split("/", 1)[-1].startswith(NVLINK_PEER_DRAIN)
            for t in taints
        )
        action = self._probe.recovery_action(gpu.uuid) if evicting else None
        if action not in RESET_ACTIONS:
            self._said.pop(gpu.device_name, None)
            self._failed.pop(gpu.device_name, None)
            return None
        assert action is not None
        if self._failed.get(gpu.device_name) == action:
            return None
        return action

    def _try(self, gpu: Gpu, action: RecoveryAction) -> bool:
        name = gpu.device_name
        holders = sorted(
            f"{entry.namespace}/{entry.name} ({', '.join(held)})"
            for entry in self._claims().values()
            if (held := sorted({r.device for r in entry.devices if _own_gpu(gpu, r.device)}))
        )
        if holders:
            self._tell(name, "waiting-claims", f"held by claims {', '.join(holders)}")
            return False
        uuids = {gpu.uuid: name} | {
            m.uuid: f"{name} MIG {m.profile.name} {m.uuid}" for m in gpu.mig_devices
        }
        try:
            # A device no GPU of the inventory names (a MIG device made since) may be this
            # GPU's: it keeps every GPU waiting.
            running = sorted(
                f"{uuids.get(p.device_uuid, p.device_uuid)} pid {p.pid}"
                for p in self._processes.processes()
                if p.device_uuid in uuids or p.device_uuid not in self._known
            )
        except DraDriverError as err:  # unknown: the GPU may be in use
            running = [f"the process list is unreadable ({err})"]
        if running:
            self._tell(name, "waiting-processes", f"compute processes: {'; '.join(running)}")
            return False
        log.warning("%s (%s): recovery action %s, idle: resetting it", name, gpu.uuid, action.name)
        try:
            self._reset(gpu)
        except OSError as err:
            self._failed[name] = action
            self._tell(name, "failed", f"the reset failed: {err}; not tried again", logging.ERROR)
            return False
        self._tell(name, "reset", f"reset for recovery action {action.name}", logging.WARNING)
        self._said.pop(name, None)
        return True

    def _tell(self, name: str, outcome: Outcome, detail: str, level: int = logging.INFO) -> None:
        if self._said.get(name) == f"{outcome}:{detail}":
            return
        self._said[name] = f"{outcome}:{detail}"
        log.log(level, "%s: automatic reset %s: %s", name, outcome, detail)
        if self._on_outcome is not None:
            self._on_outcome(outcome)
