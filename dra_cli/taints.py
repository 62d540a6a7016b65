"""``dra-driver taints clear``: an admin clears a GPU's health taints on purpose.

Run on the node, or in the kubelet plugin's pod (``kubectl exec``), where the
plugin directory is::

    dra-driver taints clear --node-state-dir /var/lib/kubelet/plugins/gpu.dra-driver.io gpu-1
    dra-driver taints clear --node-state-dir DIR --all

It drops a clear request into ``DIR/taint-clears/`` and waits (``--wait``, default
10 s) for the plugin to take it: the plugin is the one writer of ``DIR/taints.json``,
removes the taints, saves the file, republishes, then removes the request. A plugin
that is not running applies it when it starts, before its first publish.

Exit codes: 0 applied, or queued for the next start; 1 the plugin refused the request
(no such device on the node; its log says why); 2 invalid arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from api.errors import ExitCode
from dra_driver.slices import DEFAULT_DRIVER_NAME

__all__ = ["add_taints_arguments", "run_taints"]

DEFAULT_STATE_DIR = f"/var/lib/kubelet/plugins/{DEFAULT_DRIVER_NAME}"


def add_taints_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``taints`` subcommands and their flags."""
    actions = parser.add_subparsers(dest="taints_action", required=True, metavar="ACTION")
    clear = actions.add_parser(
        "clear",
        help="remove a GPU's health taints (or every GPU's) and keep them removed",
        description="Ask the kubelet plugin to remove the health taints of DEVICE (a GPU or "
        "MIG device name, or a GPU UUID), or of every GPU with --all; the removal is saved "
        "in the plugin's taint file, so restarts do not bring the taints back.",
    )
    clear.add_argument("device", nargs="?", metavar="DEVICE", help="e.g. gpu-1")
    clear.add_argument("--all", action="store_true", help="clear every GPU's taints")
    clear.add_argument(
        "--node-state-dir",
        type=Path,
        default=Path(os.environ.get("DRA_DRIVER_NODE_STATE_DIR", DEFAULT_STATE_DIR)),
        metavar="DIR",
        help=f"the plugin directory, <plugins dir>/<driver> (default {DEFAULT_STATE_DIR})",
    )
    clear.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for a running plugin to apply the request (default 10)",
    )


def run_taints(args: argparse.Namespace, *, prog: str, out: TextIO = sys.stdout) -> int:
    """``taints clear``: queue the request, wait for the plugin; the exit code."""
    from kubelet_plugin.health.taint_store import request_clear

    if (args.device is None) == (not args.all):
        print(f"{prog}: error: name one DEVICE or give --all", file=sys.stderr)
        return ExitCode.INVALID
    if not args.node_state_dir.is_dir():
        print(
            f"{prog}: error: --node-state-dir {args.node_state_dir} is not a directory; pass "
            "the kubelet plugin's directory, <plugins dir>/<driver>",
            file=sys.stderr,
        )
        return ExitCode.INVALID
    what = "every GPU" if args.all else args.device
    request = request_clear(args.node_state_dir, None if args.all else args.device)
    rejected = request.with_name(request.name + ".rejected")
    deadline = time.monotonic() + max(args.wait, 0.0)
    while os.path.lexists(request) and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.path.lexists(rejected):
        print(
            f"{prog}: the plugin refused to clear {what}: not a device of this node "
            f"(request kept as {rejected})",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    if os.path.lexists(request):
        print(
            f"taints of {what}: clear request queued as {request}; the plugin applies it when "
            "it runs (at start-up, before it publishes)",
            file=out,
        )
        return ExitCode.OK
    print(f"taints of {what}: cleared by the plugin and saved", file=out)
    return ExitCode.OK
