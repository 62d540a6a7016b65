"""The kubelet plugin's command line: its flags, their environment twins, and parsing them.

:data:`FLAGS` is the one table of flags (help, default, twins); the functions
here build a validated :class:`~kubelet_plugin.settings.model.Settings` from
parsed flags and the environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any, Final

from agent_kit import flags
from agent_kit.flags import Flag, define_flag
from api.errors import FieldError
from dra_driver.discovery.mock import DEFAULT_PROFILE
from dra_driver.slices import DEFAULT_DRIVER_NAME, DEVICE_ORDERS
from kubelet_plugin.health.taints import (
    DEFAULT_HEALTH_POLICY,
    DEFAULT_IGNORED_XIDS,
    DEFAULT_RECOVERY_SECONDS,
)
from kubelet_plugin.settings.model import (
    DEFAULT_CDI_ROOT,
    DEFAULT_DEVICE_PLUGIN_RESOURCES,
    DEFAULT_DEVICE_PLUGINS_DIR,
    DEFAULT_PLUGINS_DIR,
    DEFAULT_REGISTRY_DIR,
    MAX_UNIX_SOCKET_PATH,
    Settings,
)

__all__ = [
    "FLAGS",
    "Flag",
    "add_arguments",
    "build_parser",
    "parse_settings",
    "settings_from_args",
]

_OBJ: Final = "kubelet-plugin settings"

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
        "2xA100-80GB:mig=3g.40gb/2x2g.20gb, or a machine with NVLink topology "
        "(dgx-h100, pairs-4xA100, pcie-4xL40S, rack-4xH100)",
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
        "XIDs of application errors: their taint is informational (effect None, blocks "
        "nothing); empty: none",
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
        "auto_reset",
        "false",
        "reset a GPU whose NVML recovery action asks for a reset (GPU_RESET, "
        "DRAIN_AND_RESET, DRAIN_P2P) once it is NoExecute-tainted, no prepared claim holds "
        "it and it runs no compute process (nvidia-smi --gpu-reset; the mock's reset)",
        boolean=True,
    ),
    define_flag(
        "device_plugin_coexistence",
        "refuse",
        "refuse: publish no device while a device plugin serves GPUs on this node (the "
        "Node's allocatable, or its socket), so no GPU is handed out twice; publish: "
        "publish anyway (the two are given different GPUs)",
        metavar="MODE",
    ),
    define_flag(
        "device_plugin_resources",
        ",".join(DEFAULT_DEVICE_PLUGIN_RESOURCES),
        "extended resources that show a device plugin serving GPUs (shell patterns)",
        metavar="NAME,...",
    ),
    define_flag(
        "device_plugins_dir",
        str(DEFAULT_DEVICE_PLUGINS_DIR),
        "the kubelet's device-plugin directory, looked at for device plugins' sockets",
        metavar="DIR",
    ),
    define_flag(
        "device_plugin_check_seconds",
        "30",
        "how often the Node and the device-plugin directory are looked at for a device plugin",
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
        if size > MAX_UNIX_SOCKET_PATH:
            problems.append(
                FieldError(
                    sources.get(field, _BY_FIELD[field].flag),
                    f"socket path {str(path)!r} is {size} bytes, over the unix limit of "
                    f"{MAX_UNIX_SOCKET_PATH}; use a shorter directory",
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
