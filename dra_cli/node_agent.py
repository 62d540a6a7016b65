"""``dra-driver kubelet-plugin``: the node agent, reached from the one command line.

The node agent (``kubelet_plugin``) is one layer below the command line, the
program's composition root. It is imported inside these functions so that the offline
commands load no gRPC, Kubernetes client or NVML. Flags, environment twins and defaults
are defined once, in :mod:`kubelet_plugin.settings`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_kubelet_plugin_arguments", "run_kubelet_plugin"]


def add_kubelet_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of the node agent (the settings module is light: no gRPC, no client)."""
    from kubelet_plugin.settings import add_arguments

    add_arguments(parser)


def run_kubelet_plugin(args: argparse.Namespace, *, prog: str) -> int:
    """Build the settings from ``args`` and the environment, run until SIGTERM; the exit code."""
    from kubelet_plugin.app import run_command

    return run_command(args, prog=prog)
