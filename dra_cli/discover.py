"""``dra-driver discover``: the node's ResourceSlices as YAML, without a cluster.

Discovers the node's GPUs with the chosen backend and prints the slices the
kubelet plugin would publish, one YAML document per slice::

    dra-driver discover --backend mock --mock-profile 4xA100-40GB,4xL4 --node-name node-a

Backends: ``nvml`` (the NVIDIA driver), ``mock`` (fake GPUs from
``--mock-profile``), ``auto`` (NVML when it initialises; otherwise an error
saying so, never a silent switch to fake GPUs).

Exit codes: 0 printed; 1 discovery failed (NVML missing or erroring; a retry
may help); 2 invalid flags (unknown backend, profile, device order, a driver
name the API server would reject).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from typing import Final, TextIO, cast

import yaml

from api.errors import DiscoveryError, ExitCode, InvalidInputError
from api.resource_v1 import dump
from dra_driver.discovery.mock import DEFAULT_PROFILE, MockBackend
from dra_driver.discovery.model import DiscoveryBackend
from dra_driver.slices import DEFAULT_DRIVER_NAME, DEVICE_ORDERS, DeviceOrder, build_slices

__all__ = [
    "BACKENDS",
    "NvmlLoader",
    "add_discover_arguments",
    "open_backend",
    "run_discover",
]

BACKENDS: Final = ("auto", "nvml", "mock")

#: Builds the NVML backend for a node name; raises DiscoveryError when NVML is unusable.
NvmlLoader = Callable[[str], DiscoveryBackend]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _default_node_name() -> str:
    # The kubelet's default node name is the lower-cased host name.
    return socket.gethostname().lower()


def add_discover_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``discover`` flags, each with its environment twin."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=_env("DRA_DRIVER_BACKEND", "auto"),
        help="GPU discovery backend (env DRA_DRIVER_BACKEND; default auto: NVML, "
        "or an error if NVML does not load)",
    )
    parser.add_argument(
        "--mock-profile",
        default=_env("DRA_DRIVER_MOCK_PROFILE", DEFAULT_PROFILE),
        help="GPUs of the mock backend, e.g. 8xH100-80GB, 4xA100-40GB,4xL4 or "
        "2xA100-80GB:mig=3g.40gb/2x2g.20gb, or a machine with NVLink topology such as "
        "dgx-h100 or pairs-4xA100 (env DRA_DRIVER_MOCK_PROFILE; "
        f"default {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "--node-name",
        default=_env("DRA_DRIVER_NODE_NAME"),
        help="node (and pool) name (env DRA_DRIVER_NODE_NAME; default the host name)",
    )
    parser.add_argument(
        "--driver-name",
        default=_env("DRA_DRIVER_NAME", DEFAULT_DRIVER_NAME),
        help=f"DRA driver name (env DRA_DRIVER_NAME; default {DEFAULT_DRIVER_NAME})",
    )
    parser.add_argument(
        "--device-order",
        default=_env("DRA_DRIVER_DEVICE_ORDER", "index"),
        help="order of devices in the slices, which the scheduler's first fit follows: "
        f"{', '.join(DEVICE_ORDERS)} (env DRA_DRIVER_DEVICE_ORDER; default index)",
    )
    parser.add_argument(
        "--partitionable",
        action=argparse.BooleanOptionalAction,
        default=_env("DRA_DRIVER_PARTITIONABLE", "true") not in ("false", "0", "no"),
        help="publish MIG-capable GPUs as partitionable devices with MIG placements "
        "(env DRA_DRIVER_PARTITIONABLE; default true; needs Kubernetes 1.35+)",
    )
    parser.add_argument(
        "--shared-gpus",
        action=argparse.BooleanOptionalAction,
        default=_env("DRA_DRIVER_SHARED_GPUS", "false") not in ("false", "0", "no"),
        help="publish full GPUs for sharing by consumable capacity (memory, compute) "
        "(env DRA_DRIVER_SHARED_GPUS; default false; needs Kubernetes 1.34+)",
    )


def _load_nvml(node_name: str) -> DiscoveryBackend:
    # The command line is the composition root (see the import contracts in
    # pyproject.toml); importing here keeps pynvml out of every other command.
    from kubelet_plugin.nvml import NvmlBackend

    return NvmlBackend(node_name)


def open_backend(
    kind: str,
    *,
    node_name: str,
    mock_profile: str = DEFAULT_PROFILE,
    load_nvml: NvmlLoader | None = None,
) -> DiscoveryBackend:
    """The discovery backend ``kind`` names.

    ``auto`` tries NVML and, when it does not initialise, raises DiscoveryError
    saying so and how to get fake GPUs instead. Raises InvalidInputError for
    an unknown kind or mock profile.
    """
    loader = load_nvml or _load_nvml
    if kind == "mock":
        return MockBackend(node_name, mock_profile)
    if kind == "nvml":
        return loader(node_name)
    if kind == "auto":
        try:
            return loader(node_name)
        except DiscoveryError as err:
            raise DiscoveryError(
                f"--backend auto found no usable NVIDIA GPU backend: {err}. "
                "Run with --backend mock (and --mock-profile) for fake GPUs"
            ) from None
    raise InvalidInputError(
        f"unknown backend {kind!r}: use one of {', '.join(BACKENDS)}", obj="--backend"
    )


def run_discover(
    args: argparse.Namespace,
    out: TextIO,
    *,
    prog: str = "dra-driver",
    err: TextIO | None = None,
    load_nvml: NvmlLoader | None = None,
) -> int:
    """Discover, plan and print the node's slices; return the exit code."""
    errors = err or sys.stderr
    node_name = args.node_name or _default_node_name()
    backend: DiscoveryBackend | None = None
    try:
        if args.device_order not in DEVICE_ORDERS:
            raise InvalidInputError(
                f"unknown device order {args.device_order!r}: use one of "
                f"{', '.join(DEVICE_ORDERS)}",
                obj="--device-order",
            )
        backend = open_backend(
            args.backend,
            node_name=node_name,
            mock_profile=args.mock_profile,
            load_nvml=load_nvml,
        )
        inventory = backend.discover()
        slices = build_slices(
            inventory,
            driver_name=args.driver_name,
            device_order=cast(DeviceOrder, args.device_order),
            partitionable=args.partitionable,
            shared_gpus=args.shared_gpus,
        )
    except InvalidInputError as exc:
        print(f"{prog}: error: {exc}", file=errors)
        return ExitCode.INVALID
    except DiscoveryError as exc:
        print(f"{prog}: discovery failed: {exc}", file=errors)
        return ExitCode.FAILED
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
    yaml.safe_dump_all([dump(s) for s in slices], out, sort_keys=False)
    devices = sum(len(s.spec.devices or []) for s in slices)
    print(
        f"{prog}: node {node_name}: {len(inventory.gpus)} GPU(s), {devices} device(s) "
        f"in {len(slices)} slice(s) (backend {args.backend})",
        file=errors,
    )
    return ExitCode.OK
