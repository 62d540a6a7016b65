"""The mock backend's answer to "did this GPU recover?": recovery actions, resets, validation.

:class:`MockRecovery` is the mock GPUs' :class:`~dra_driver.discovery.model.RecoveryProbe`.
Every GPU starts sound (recovery action NONE, validating); a test or a person sets what
NVML would report (:meth:`set_action`, :meth:`set_invalid`), runs the reset an operator
would (:meth:`reset`), or plays an older driver that lacks the field (:meth:`set_supported`).
The kubelet plugin's fault spool drives it from files
(:mod:`kubelet_plugin.health.faults`). State is in memory: a restarted plugin's mock starts
sound again, as a GPU does after a reset.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dra_driver.discovery.model import RecoveryAction

__all__ = ["MockRecovery"]


class MockRecovery:
    """Recovery state of the mock GPUs, keyed by UUID; thread-safe.

    ``check_gpu`` raises InvalidInputError for a UUID that is no GPU of the node.
    """

    def __init__(self, check_gpu: Callable[[str], object]) -> None:
        self._check_gpu = check_gpu
        self._lock = threading.Lock()
        self._actions: dict[str, RecoveryAction] = {}
        self._invalid: dict[str, str] = {}
        self._supported = True

    def set_action(self, gpu_uuid: str, action: RecoveryAction) -> None:
        """What the GPU's recovery-action field reads from now on."""
        self._check_gpu(gpu_uuid)
        with self._lock:
            self._actions[gpu_uuid] = action

    def set_invalid(self, gpu_uuid: str, problem: str | None) -> None:
        """Make the GPU fail validation with ``problem`` (None: validate again)."""
        self._check_gpu(gpu_uuid)
        with self._lock:
            if problem is None:
                self._invalid.pop(gpu_uuid, None)
            else:
                self._invalid[gpu_uuid] = problem

    def set_supported(self, supported: bool) -> None:
        """False plays a driver without the field (NVML_ERROR_NOT_SUPPORTED on every GPU)."""
        with self._lock:
            self._supported = supported

    def reset(self, gpu_uuid: str) -> None:
        """A GPU reset done: the action reads NONE and the GPU validates."""
        self._check_gpu(gpu_uuid)
        with self._lock:
            self._actions.pop(gpu_uuid, None)
            self._invalid.pop(gpu_uuid, None)

    def recovery_action(self, gpu_uuid: str) -> RecoveryAction | None:
        with self._lock:
            if not self._supported:
                return None
            return self._actions.get(gpu_uuid, RecoveryAction.NONE)

    def validate(self, gpu_uuid: str) -> str | None:
        with self._lock:
            return self._invalid.get(gpu_uuid)
