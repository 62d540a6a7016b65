"""``dra-driver controller`` and ``explain claim NS/NAME``: the cluster agent, from the CLI.

The controller is an agent (``controller``), one layer below the command line, the
program's composition root. It is imported inside these functions so that the offline
commands load no Kubernetes client.
Flags, environment twins and defaults are defined once, in
:mod:`controller.settings`.
"""

from __future__ import annotations

import argparse
from typing import TextIO

__all__ = ["add_controller_arguments", "run_controller", "run_explain_claim"]


def add_controller_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of the controller (the settings module loads no Kubernetes client)."""
    from controller.settings import add_arguments

    add_arguments(parser)


def run_controller(args: argparse.Namespace, *, prog: str) -> int:
    """Build the settings from ``args`` and the environment, run until SIGTERM; the exit code."""
    from controller.app import main

    return int(main(args, prog=prog))


def run_explain_claim(target: str, *, node: str | None, output: str, out: TextIO, prog: str) -> int:
    """``explain claim NAMESPACE/NAME`` against the live cluster; the exit code."""
    from controller.app import run_explain_claim as explain_claim

    return int(explain_claim(target, node=node, output=output, out=out, prog=prog))
