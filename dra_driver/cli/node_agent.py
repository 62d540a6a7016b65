"""``dra-driver kubelet-plugin``: the node agent, reached from the one command line.

The agent lives in the adapter layer (``kubelet_plugin``), above this pure
core, so the CLI reaches it at run time through :func:`importlib.import_module`
(as ``discover`` reaches the NVML backend): the core keeps no import-time
dependency on gRPC, the Kubernetes client or NVML, and the layering contract
holds. Flags, environment twins and defaults are defined once, in
:mod:`kubelet_plugin.settings`.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["add_kubelet_plugin_arguments", "run_kubelet_plugin"]


def add_kubelet_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of the node agent (the settings module is light: no gRPC, no client)."""
    importlib.import_module("kubelet_plugin.settings").add_arguments(parser)


def run_kubelet_plugin(args: argparse.Namespace, *, prog: str) -> int:
    """Build the settings from ``args`` and the environment, run until SIGTERM; the exit code."""
    status: int = importlib.import_module("kubelet_plugin.app").run_command(args, prog=prog)
    return status
