"""The kubelet plugin's :class:`Settings`: every value it runs with, validated, immutable.

Field rules name what is wrong and the fix; rules between fields (socket path
lengths, the checkpoint outside the CDI root) are checked by
:mod:`~kubelet_plugin.settings.command_line`, which builds the object.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_kit import flags
from api.errors import InvalidInputError
from api.validation import is_dns1123_subdomain
from dra_driver.discovery.mock import DEFAULT_PROFILE, parse_mock_profile
from dra_driver.discovery.model import HealthEventKind
from dra_driver.slices import DEFAULT_DRIVER_NAME, DeviceOrder
from kubelet_plugin.health.taints import (
    DEFAULT_HEALTH_POLICY,
    DEFAULT_IGNORED_XIDS,
    DEFAULT_RECOVERY_SECONDS,
    parse_health_policy,
    parse_xids,
)
from kubelet_plugin.socket_paths import dra_socket_path, registration_socket_path

__all__ = [
    "DEFAULT_CDI_ROOT",
    "DEFAULT_DEVICE_PLUGINS_DIR",
    "DEFAULT_DEVICE_PLUGIN_RESOURCES",
    "DEFAULT_PLUGINS_DIR",
    "DEFAULT_REGISTRY_DIR",
    "MAX_UNIX_SOCKET_PATH",
    "GpuBackend",
    "LogFormat",
    "LogLevel",
    "Settings",
    "split_host_port",
]

GpuBackend = Literal["auto", "nvml", "mock"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

# The kubelet's paths (spec/kubelet-plugin.md §1). Repeated from kubelet_plugin.server
# on purpose: importing that module would pull gRPC into every CLI start.
DEFAULT_REGISTRY_DIR: Final = Path("/var/lib/kubelet/plugins_registry")
DEFAULT_PLUGINS_DIR: Final = Path("/var/lib/kubelet/plugins")
DEFAULT_CDI_ROOT: Final = Path("/var/run/cdi")
#: The kubelet's device-plugin directory, where device plugins' sockets appear.
DEFAULT_DEVICE_PLUGINS_DIR: Final = Path("/var/lib/kubelet/device-plugins")
#: Extended resources of NVIDIA's device plugin (shell patterns).
DEFAULT_DEVICE_PLUGIN_RESOURCES: Final = (
    "nvidia.com/gpu",
    "nvidia.com/gpu.shared",
    "nvidia.com/mig-*",
)
DevicePluginCoexistence = Literal["refuse", "publish"]

MAX_UNIX_SOCKET_PATH: Final = 107  # sun_path is 108 bytes with the terminating NUL
_UNIX_PREFIX: Final = "unix://"
# A Kubernetes UID is a UUID; anything of that alphabet is safe in a file name.
_POD_UID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def _default_node_name() -> str:
    # The kubelet's default node name is the lower-cased host name.
    return socket.gethostname().lower()


# --- Addresses (also parsed from environment values) ------------------------------------


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) to (host, port).

    Raises ValueError saying what form is expected; see agent_kit.flags.split_host_port.
    """
    return flags.split_host_port(address, example_port=9400)


# --- The settings ------------------------------------------------------------------------


class Settings(BaseModel):
    """Everything ``dra-driver kubelet-plugin`` is told; validated, immutable.

    Paths are absolute (relative ones are taken from the working directory).
    Build it with :func:`parse_settings` or :func:`settings_from_args` so
    errors name flags; constructing it directly (tests) raises pydantic's
    ValidationError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    driver_name: str = DEFAULT_DRIVER_NAME
    node_name: str = Field(default_factory=_default_node_name)
    kubeconfig: Path | None = None
    """None: the in-cluster service account configuration."""
    registry_dir: Path = DEFAULT_REGISTRY_DIR
    plugins_dir: Path = DEFAULT_PLUGINS_DIR
    cdi_root: Path = DEFAULT_CDI_ROOT
    driver_root: Path = Path("/")
    host_driver_root: Path | None = None
    """The driver root's path on the host; None: :attr:`driver_root` itself."""
    dev_root: Path = Path("/")
    hook_path: Path | None = None
    gpu_backend: GpuBackend = "auto"
    mock_profile: str = DEFAULT_PROFILE
    device_order: DeviceOrder = "index"
    partitionable: bool = True
    shared_gpus: bool = False
    checkpoint_path: Path | None = None
    """None: :attr:`checkpoint_file`'s default under the plugin directory."""
    pod_uid: str | None = None
    """The plugin pod's UID: set, the plugin can run beside the pod it replaces
    (rolling update with max surge): instance-named sockets, calls serialised
    with the other instance through a file lock, one publisher at a time."""
    liveness_address: str | None = None
    metrics_address: str | None = None
    health_policy: dict[HealthEventKind, str] = Field(
        default_factory=lambda: parse_health_policy(DEFAULT_HEALTH_POLICY)
    )
    ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS
    health_recovery_seconds: float = Field(default=DEFAULT_RECOVERY_SECONDS, gt=0)
    auto_reset: bool = False
    """Reset a GPU whose recovery action asks for it once it is drained and idle
    (:mod:`kubelet_plugin.health.auto_reset`); off: an operator resets it."""
    device_plugin_coexistence: DevicePluginCoexistence = "refuse"
    """refuse: publish no device while a device plugin serves GPUs on the node
    (:mod:`kubelet_plugin.device_plugin_guard`); publish: publish them anyway."""
    device_plugin_resources: tuple[str, ...] = DEFAULT_DEVICE_PLUGIN_RESOURCES
    device_plugins_dir: Path = DEFAULT_DEVICE_PLUGINS_DIR
    device_plugin_check_seconds: float = Field(default=30.0, gt=0)
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"

    # --- field rules --------------------------------------------------------------

    @field_validator("driver_name")
    @classmethod
    def _check_driver_name(cls, value: str) -> str:
        return flags.check_driver_name(value)

    @field_validator("node_name")
    @classmethod
    def _check_node_name(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "the node name is required; in a DaemonSet set NODE_NAME from "
                "spec.nodeName through the downward API"
            )
        if not is_dns1123_subdomain(value):
            raise ValueError(
                f"invalid node name {value!r}: must be a lower-case DNS subdomain, "
                "the name of the Node object"
            )
        return value

    @field_validator(
        "kubeconfig",
        "registry_dir",
        "plugins_dir",
        "cdi_root",
        "driver_root",
        "host_driver_root",
        "dev_root",
        "hook_path",
        "checkpoint_path",
        "device_plugins_dir",
        mode="before",
    )
    @classmethod
    def _absolute_path(cls, value: Any) -> Any:
        return flags.optional_absolute_path(value)

    @field_validator("pod_uid", mode="before")
    @classmethod
    def _check_pod_uid(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if not _POD_UID_RE.fullmatch(value):
            raise ValueError(
                f"invalid pod UID {value!r}: letters, digits and '-' only (a Kubernetes UID); "
                "set it from metadata.uid through the downward API"
            )
        return value

    @field_validator("mock_profile")
    @classmethod
    def _check_mock_profile(cls, value: str) -> str:
        try:
            parse_mock_profile(value)
        except InvalidInputError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("liveness_address", mode="before")
    @classmethod
    def _check_liveness_address(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        if value.startswith(_UNIX_PREFIX):
            path = value.removeprefix(_UNIX_PREFIX)
            if not path.startswith("/"):
                raise ValueError(f"{value!r}: use an absolute path, e.g. unix:///run/live.sock")
            if len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH:
                raise ValueError(
                    f"{value!r}: the socket path is over the unix limit of "
                    f"{MAX_UNIX_SOCKET_PATH} bytes; use a shorter one"
                )
            return value
        host, port = split_host_port(value)
        if not host:
            # ":port" means every interface, which gRPC spells [::] (IPv4 included).
            return f"[::]:{port}"
        return value

    @field_validator("metrics_address", mode="before")
    @classmethod
    def _check_metrics_address(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        split_host_port(value)
        return value

    @field_validator("health_policy", mode="before")
    @classmethod
    def _parse_policy(cls, value: Any) -> Any:
        return parse_health_policy(value) if isinstance(value, str) else value

    @field_validator("device_plugin_resources", mode="before")
    @classmethod
    def _split_resources(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = tuple(n.strip() for n in value.split(",") if n.strip())
        for name in names:
            if "/" not in name:
                raise ValueError(
                    f"{name!r} is not an extended resource name: use <domain>/<name>, e.g. "
                    "nvidia.com/gpu (shell patterns such as nvidia.com/mig-* allowed)"
                )
        return names

    @field_validator("ignored_xids", mode="before")
    @classmethod
    def _parse_xids(cls, value: Any) -> Any:
        return parse_xids(value) if isinstance(value, str) else value

    @field_validator(
        "gpu_backend",
        "device_order",
        "device_plugin_coexistence",
        "log_format",
        "log_level",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # Choices are lower-case words; "JSON" or "Mock" in an env file is no reason to fail.
        return value.strip().lower() if isinstance(value, str) else value

    # --- derived values -----------------------------------------------------------

    @property
    def plugin_dir(self) -> Path:
        """``<plugins dir>/<driver>``: the DRA socket and, by default, the checkpoint."""
        return self.plugins_dir / self.driver_name

    @property
    def checkpoint_file(self) -> Path:
        """Where the checkpoint lives: ``--checkpoint-path`` or ``<plugin dir>/checkpoint.json``."""
        return self.checkpoint_path or self.plugin_dir / "checkpoint.json"

    @property
    def registration_socket(self) -> Path:
        return registration_socket_path(self.registry_dir, self.driver_name, self.pod_uid)

    @property
    def dra_socket(self) -> Path:
        return dra_socket_path(self.plugins_dir, self.driver_name, self.pod_uid)

    @property
    def mps_dir(self) -> Path:
        """``<plugin dir>/mps``: the MPS control daemons' pipe and log directories, one
        directory per GPU (the plugin directory has the same path on the host)."""
        return self.plugin_dir / "mps"

    @property
    def metadata_dir(self) -> Path:
        """``<plugin dir>/dra-device-metadata``: the claims' device metadata files (KEP-5304),
        which the CDI specs bind-mount (the plugin directory has the same path on the host)."""
        return self.plugin_dir / "dra-device-metadata"

    @property
    def serialize_lock(self) -> Path:
        """The file lock the plugin instances of this node serialise prepares with."""
        return self.plugin_dir / "serialize.lock"

    @property
    def publisher_lock(self) -> Path:
        """The file lock held by the one instance that publishes the node's slices."""
        return self.plugin_dir / "publisher.lock"

    @property
    def mock_faults_dir(self) -> Path:
        """Where the mock backend picks up injected faults (see kubelet_plugin.health.faults)."""
        return self.dev_root / "run" / "dra-driver" / "faults"

    def summary(self) -> dict[str, str]:
        """Every setting as text, for the start-up log line."""
        data = self.model_dump(mode="json")
        data["health_policy"] = ",".join(f"{k}={v}" for k, v in self.health_policy.items())
        data["ignored_xids"] = ",".join(str(x) for x in sorted(self.ignored_xids))
        data["checkpoint_path"] = str(self.checkpoint_file)
        data["device_plugin_resources"] = ",".join(self.device_plugin_resources)
        return {key: "" if value is None else str(value) for key, value in data.items()}
