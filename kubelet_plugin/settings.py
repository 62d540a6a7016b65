"""The settings of ``dra-driver kubelet-plugin``: every flag, its environment twin, its default.

One :class:`Settings` object is built at start-up from the command line and the
environment (a flag wins over its twin, the twin over the default) and
validated before anything runs: a wrong value stops the plugin with an error
that names the flag (or the environment variable it came from) and the fix.

========================== =============================== =======================================
flag                       environment twin                default
========================== =============================== =======================================
--driver-name              DRA_DRIVER_NAME                 gpu.dra-driver.io
--node-name                NODE_NAME, DRA_DRIVER_NODE_NAME the host name, lower-cased (as the
                                                           kubelet names its node)
--kubeconfig               KUBECONFIG                      none: in-cluster configuration
--registry-dir             DRA_DRIVER_REGISTRY_DIR         /var/lib/kubelet/plugins_registry
--plugins-dir              DRA_DRIVER_PLUGINS_DIR          /var/lib/kubelet/plugins
--cdi-root                 DRA_DRIVER_CDI_ROOT             /var/run/cdi
--driver-root              DRA_DRIVER_DRIVER_ROOT          /
--host-driver-root         DRA_DRIVER_HOST_DRIVER_ROOT     --driver-root
--dev-root                 DRA_DRIVER_DEV_ROOT             /
--hook-path                DRA_DRIVER_HOOK_PATH            none: no ldcache hook in CDI specs
--gpu-backend              DRA_DRIVER_GPU_BACKEND          auto (NVML; an error if it does not load)
--mock-profile             DRA_DRIVER_MOCK_PROFILE         8xH100-80GB
--device-order             DRA_DRIVER_DEVICE_ORDER         index
--partitionable            DRA_DRIVER_PARTITIONABLE        true
--shared-gpus              DRA_DRIVER_SHARED_GPUS          false
--checkpoint-path          DRA_DRIVER_CHECKPOINT_PATH      <plugins dir>/<driver>/checkpoint.json
--pod-uid                  POD_UID, DRA_DRIVER_POD_UID     empty: the only plugin instance of
                                                           the node (no rolling update)
--liveness-address         DRA_DRIVER_LIVENESS_ADDRESS     empty: no liveness service
--metrics-address          DRA_DRIVER_METRICS_ADDRESS      empty: no metrics endpoint
--health-policy            DRA_DRIVER_HEALTH_POLICY        xid=NoSchedule,ecc-double-bit=NoExecute,
                                                           gpu-lost=NoExecute
--ignored-xids             DRA_DRIVER_IGNORED_XIDS         13,31,43,45,68,109
--health-recovery-seconds  DRA_DRIVER_HEALTH_RECOVERY_SECONDS  300
--log-format               DRA_DRIVER_LOG_FORMAT           text
--log-level                DRA_DRIVER_LOG_LEVEL            info
========================== =============================== =======================================

This module is imported when the command line is built, so it stays light:
no gRPC, no Kubernetes client, no NVML.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_kit import flags
from agent_kit.flags import Flag, define_flag
from api import limits
from api.errors import FieldError, InvalidInputError
from api.validation import is_dns1123_subdomain
from dra_driver.discovery.mock import DEFAULT_PROFILE, parse_mock_profile
from dra_driver.discovery.model import HealthEventKind
from dra_driver.slices import DEFAULT_DRIVER_NAME, DEVICE_ORDERS, DeviceOrder
from kubelet_plugin.health.taints import (
    DEFAULT_HEALTH_POLICY,
    DEFAULT_IGNORED_XIDS,
    DEFAULT_RECOVERY_SECONDS,
    HEALTH_EVENT_KINDS,
    parse_health_policy,
    parse_xids,
)
from kubelet_plugin.socket_paths import dra_socket_path, registration_socket_path

__all__ = [
    "DEFAULT_CDI_ROOT",
    "DEFAULT_HEALTH_POLICY",
    "DEFAULT_IGNORED_XIDS",
    "DEFAULT_PLUGINS_DIR",
    "DEFAULT_RECOVERY_SECONDS",
    "DEFAULT_REGISTRY_DIR",
    "FLAGS",
    "HEALTH_EVENT_KINDS",
    "Flag",
    "GpuBackend",
    "LogFormat",
    "Settings",
    "add_arguments",
    "build_parser",
    "parse_health_policy",
    "parse_settings",
    "parse_xids",
    "settings_from_args",
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

_MAX_UNIX_SOCKET_PATH: Final = 107  # sun_path is 108 bytes with the terminating NUL
_UNIX_PREFIX: Final = "unix://"
_OBJ: Final = "kubelet-plugin settings"
# A Kubernetes UID is a UUID; anything of that alphabet is safe in a file name.
_POD_UID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def _default_node_name() -> str:
    # The kubelet's default node name is the lower-cased host name.
    return socket.gethostname().lower()


# --- Value parsers (also used for environment values) ------------------------------------


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
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"

    # --- field rules --------------------------------------------------------------

    @field_validator("driver_name")
    @classmethod
    def _check_driver_name(cls, value: str) -> str:
        if len(value) > limits.DRIVER_NAME_MAX_LENGTH or not is_dns1123_subdomain(value):
            raise ValueError(
                f"invalid driver name {value!r}: must be a lower-case DNS subdomain of at "
                f"most {limits.DRIVER_NAME_MAX_LENGTH} characters, such as {DEFAULT_DRIVER_NAME}"
            )
        return value

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
            if len(os.fsencode(path)) > _MAX_UNIX_SOCKET_PATH:
                raise ValueError(
                    f"{value!r}: the socket path is over the unix limit of "
                    f"{_MAX_UNIX_SOCKET_PATH} bytes; use a shorter one"
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

    @field_validator("ignored_xids", mode="before")
    @classmethod
    def _parse_xids(cls, value: Any) -> Any:
        return parse_xids(value) if isinstance(value, str) else value

    @field_validator("gpu_backend", "device_order", "log_format", "log_level", mode="before")
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
        return {key: "" if value is None else str(value) for key, value in data.items()}


# --- Flags and environment twins ------------------------------------------------------------


FLAGS: Final[tuple[Flag, ...]] = (
    define_flag(
        "driver_name",
        DEFAULT_DRIVER_NAME,
        "DRA driver name: the domain of the device attributes and the name the kubelet "
        "and the ResourceClaims' results use",
        env=("DRA_DRIVER_NAME",),
        metavar="NAME",
    ),
    define_flag(
        "node_name",
        "the host name, lower-cased",
        "name of this node (the pool name of its ResourceSlices)",
        env=("NODE_NAME", "DRA_DRIVER_NODE_NAME"),
        metavar="NAME",
    ),
    define_flag(
        "kubeconfig",
        "in-cluster configuration",
        "kubeconfig file for the API server",
        env=("KUBECONFIG",),
        metavar="FILE",
    ),
    define_flag(
        "registry_dir",
        str(DEFAULT_REGISTRY_DIR),
        "directory the kubelet watches for plugin registration sockets",
        metavar="DIR",
    ),
    define_flag(
        "plugins_dir",
        str(DEFAULT_PLUGINS_DIR),
        "kubelet plugins directory; the DRA socket goes to <dir>/<driver>/dra.sock",
        metavar="DIR",
    ),
    define_flag("cdi_root", str(DEFAULT_CDI_ROOT), "directory of the CDI specs", metavar="DIR"),
    define_flag(
        "driver_root",
        "/",
        "where the NVIDIA driver's files are installed (/run/nvidia/driver for a "
        "containerised driver)",
        metavar="DIR",
    ),
    define_flag(
        "host_driver_root",
        "the --driver-root",
        "the driver root's path on the host, when this process sees it elsewhere (a "
        "container mounting the host's / at /driver-root): the CDI specs name host paths",
        metavar="DIR",
    ),
    define_flag(
        "dev_root",
        "/",
        "directory holding dev/nvidia*; the mock backend creates fake nodes there and "
        "takes injected faults from <dir>/run/dra-driver/faults",
        metavar="DIR",
    ),
    define_flag(
        "hook_path",
        "none",
        "host path of nvidia-cdi-hook, for the ldcache hook in CDI specs",
        metavar="FILE",
    ),
    define_flag(
        "gpu_backend",
        "auto",
        "GPU discovery: nvml, mock (fake GPUs from --mock-profile) or auto (NVML, and an "
        "error if it does not load; never fake GPUs silently)",
        metavar="BACKEND",
    ),
    define_flag(
        "mock_profile",
        DEFAULT_PROFILE,
        "GPUs of the mock backend, e.g. 8xH100-80GB, 4xA100-40GB,4xL4 or "
        "2xA100-80GB:mig=3g.40gb/2x2g.20gb",
        metavar="PROFILE",
    ),
    define_flag(
        "device_order",
        "index",
        f"order of the published devices ({', '.join(DEVICE_ORDERS)}); the scheduler's "
        "first fit follows it",
        metavar="ORDER",
    ),
    define_flag(
        "partitionable",
        "true",
        "publish MIG-capable GPUs as partitionable devices (Kubernetes 1.35+)",
        boolean=True,
    ),
    define_flag(
        "shared_gpus",
        "false",
        "publish full GPUs for sharing by consumable capacity (memory, compute; "
        "Kubernetes 1.34+ with DRAConsumableCapacity); each share gets MPS limits",
        boolean=True,
    ),
    define_flag(
        "checkpoint_path",
        "<plugins dir>/<driver>/checkpoint.json",
        "file recording the prepared claims",
        metavar="FILE",
    ),
    define_flag(
        "pod_uid",
        "empty: the only instance",
        "UID of the plugin's pod (downward API metadata.uid): lets a new plugin pod run "
        "beside the one it replaces during a rolling update (sockets named after it)",
        env=("POD_UID", "DRA_DRIVER_POD_UID"),
        metavar="UID",
    ),
    define_flag(
        "liveness_address",
        "empty: off",
        "grpc.health.v1 liveness service: HOST:PORT or unix:///PATH",
        metavar="ADDRESS",
    ),
    define_flag(
        "metrics_address",
        "empty: off",
        "Prometheus metrics endpoint, HOST:PORT (e.g. 127.0.0.1:9400; :9400 for every interface)",
        metavar="ADDRESS",
    ),
    define_flag(
        "health_policy",
        DEFAULT_HEALTH_POLICY,
        "device taint effect per health event kind (xid, ecc-double-bit, ecc-single-bit, "
        "gpu-lost); kinds left out raise no taint",
        metavar="KIND=EFFECT,...",
    ),
    define_flag(
        "ignored_xids",
        ",".join(str(x) for x in sorted(DEFAULT_IGNORED_XIDS)),
        "XIDs that raise no taint (application errors); empty ignores none",
        metavar="XID,...",
    ),
    define_flag(
        "health_recovery_seconds",
        f"{DEFAULT_RECOVERY_SECONDS:g}",
        "a device's taints are removed after it had no health event for this long "
        "(gpu-lost taints stay until the plugin restarts)",
        metavar="SECONDS",
    ),
    define_flag(
        "log_format", "text", "log format: text or json (one object per line)", metavar="FORMAT"
    ),
    define_flag("log_level", "info", "log level: debug, info, warning or error", metavar="LEVEL"),
)

_BY_FIELD: Final = {flag.field: flag for flag in FLAGS}


def _cross_check(settings: Settings, sources: Mapping[str, str]) -> list[FieldError]:
    """Rules between settings: socket paths within the unix limit, distinct files."""
    problems: list[FieldError] = []
    for path, field in (
        (settings.registration_socket, "registry_dir"),
        (settings.dra_socket, "plugins_dir"),
    ):
        size = len(os.fsencode(path))
        if size > _MAX_UNIX_SOCKET_PATH:
            problems.append(
                FieldError(
                    sources.get(field, _BY_FIELD[field].flag),
                    f"socket path {str(path)!r} is {size} bytes, over the unix limit of "
                    f"{_MAX_UNIX_SOCKET_PATH}; use a shorter directory",
                )
            )
    checkpoint = settings.checkpoint_file
    if checkpoint.parent == settings.cdi_root:
        problems.append(
            FieldError(
                sources.get("checkpoint_path", "--checkpoint-path"),
                f"{checkpoint} is in the CDI root {settings.cdi_root}, where container runtimes "
                "read every file as a CDI spec; put it elsewhere",
            )
        )
    return problems


_FLAG_SET: Final = flags.FlagSet(
    flags=FLAGS,
    settings=Settings,
    obj=_OBJ,
    prog="dra-driver kubelet-plugin",
    description="The node agent: registers with the kubelet, prepares claims, "
    "publishes this node's ResourceSlices, turns GPU health events into device taints.",
    cross_check=_cross_check,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every flag to ``parser``. Defaults stay None: :func:`settings_from_args`
    then takes the environment twin, then the documented default."""
    _FLAG_SET.add_arguments(parser)


def settings_from_args(
    args: argparse.Namespace | Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The Settings of parsed flags, completed from ``environ`` (default os.environ).

    A flag that was given wins; else the first of its environment twins that is
    set (an empty value counts: it turns an address off); else the default.
    Raises InvalidInputError whose field errors name the flags (and the
    environment variable a bad value came from) and say how to fix them; when
    every field is valid, the rules between them (socket path lengths, the
    checkpoint outside the CDI root) are checked.
    """
    return _FLAG_SET.settings_from_args(args, environ)


def build_parser(prog: str = "dra-driver kubelet-plugin") -> argparse.ArgumentParser:
    """A parser with just the kubelet plugin's flags (the subcommand's own)."""
    return _FLAG_SET.build_parser(prog)


def parse_settings(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Parse ``argv`` (flags only, no subcommand) and ``environ``; see settings_from_args.

    An unknown flag exits through argparse (status 2) like any CLI error.
    """
    return settings_from_args(build_parser().parse_args(argv), environ)
