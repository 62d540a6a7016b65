"""The NVML library and its bindings: loading them, and calling them with errors that say where.

Holds what the other modules of :mod:`kubelet_plugin.nvml` share: the NVML
return codes they tell apart, :class:`NvmlCalls` (an NVML error becomes a
DiscoveryError naming the node and the call) and :func:`decode_text`.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from api.errors import DiscoveryError
from dra_driver.cdi import DRIVER_LIBRARY_DIRS

__all__ = ["NVML_LIBRARY", "NvmlCalls", "decode_text", "load_pynvml", "preload_library"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# NVML return codes (nvml.h); the same numbers as pynvml's NVML_ERROR_* constants.
NOT_SUPPORTED: Final = 3
INVALID_ARGUMENT: Final = 2
NOT_FOUND: Final = 6
TIMEOUT: Final = 10
FUNCTION_NOT_FOUND: Final = 13
GPU_IS_LOST: Final = 15
IN_USE: Final = 19
INSUFFICIENT_RESOURCES: Final = 23
#: Codes that mean "this GPU or driver does not offer it", not "something broke".
ABSENT: Final = frozenset({NOT_SUPPORTED, FUNCTION_NOT_FOUND})

NVML_LIBRARY: Final = "libnvidia-ml.so.1"

INIT_HINT: Final = (
    "is the NVIDIA driver loaded and libnvidia-ml.so.1 on the library path "
    "(in a container: the driver root mounted)? Use --backend mock for fake GPUs"
)


def load_pynvml() -> Any:
    """Import the real ``pynvml`` module; DiscoveryError when ``nvidia-ml-py`` is missing."""
    try:
        import pynvml
    except ImportError as err:
        raise DiscoveryError(
            f"NVML bindings not importable ({err}): install the nvidia-ml-py package"
        ) from None
    return pynvml


def preload_library(driver_root: Path) -> Path | None:
    """Load ``libnvidia-ml.so.1`` from the driver root, where one is there; its path.

    The plugin's image holds no NVIDIA library: in a container, the host's
    driver root is mounted instead. Loaded by its full path, the library is
    the one pynvml gets when it asks the dynamic loader for
    ``libnvidia-ml.so.1`` (a loaded object answers for its soname), so no
    library path has to point into the host's directories. None when the
    driver root is ``/`` (the loader's own search finds it) or holds none.
    """
    if driver_root == Path("/"):
        return None
    for directory in DRIVER_LIBRARY_DIRS:
        candidate = driver_root / directory.lstrip("/") / NVML_LIBRARY
        if candidate.exists():
            try:
                ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
            except OSError as err:
                raise DiscoveryError(f"loading {candidate} failed: {err}") from None
            log.info("NVML library loaded from the driver root: %s", candidate)
            return candidate
    return None


def decode_text(value: object) -> str:
    """pynvml returns ``str`` for most strings, but ``bytes`` in some versions/fields."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00")
    return str(value)


class NvmlCalls:
    """Calls into one pynvml module for one node, with NVML errors translated.

    ``nvml`` is the pynvml module (or a fake with the same functions and
    ``NVMLError``); ``node_name`` prefixes every error message.
    """

    def __init__(self, nvml: Any, node_name: str) -> None:
        self.nvml: Any = nvml
        self.node_name = node_name

    def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Call NVML; any NVML error becomes a DiscoveryError naming ``what``."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as err:
            raise DiscoveryError(f"node {self.node_name}: {what}: {err}") from None

    def optional(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """Call NVML; None (and a log line) where the GPU or driver lacks the function."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as err:
            if getattr(err, "value", None) in ABSENT:
                log.info("node %s: %s: %s; left out", self.node_name, what, err)
                return None
            raise DiscoveryError(f"node {self.node_name}: {what}: {err}") from None
