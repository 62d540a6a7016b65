"""``python -m e2e.cluster up|down|status``: the local cluster by hand.

::

    python -m e2e.cluster up [--dir DIR] [--node-name NAME] [--bin-dir DIR]
                             [--feature-gates NAME=true,...]
    python -m e2e.cluster status [--dir DIR]
    python -m e2e.cluster down [--dir DIR]

``up`` builds or reuses the binaries (e2e/cluster/build.sh), starts the
cluster in DIR (default ``$DRA_DRIVER_CLUSTER_DIR`` or ``/tmp/dra-cluster``),
leaves it running and prints ``export KUBECONFIG=...`` on stdout; progress goes
to stderr. ``down`` stops the cluster recorded in DIR's state file and undoes
its host changes. ``status`` prints each component and whether it runs.

Exit status: 0 success (``status``: everything runs), 1 a ClusterError (``status``:
no cluster or a component stopped), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from e2e.cluster.errors import ClusterError
from e2e.cluster.harness import DEFAULT_NODE_NAME, LocalCluster

DEFAULT_DIR = "/tmp/dra-cluster"


def _feature_gates(text: str) -> dict[str, bool]:
    gates = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or value.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME=true or NAME=false")
        gates[name] = value.lower() == "true"
    return gates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.cluster", description="Start, inspect or stop the local cluster."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("up", "start the cluster and leave it running"),
        ("down", "stop the cluster and undo its host changes"),
        ("status", "show which components run"),
    ):
        cmd = commands.add_parser(name, help=text, description=text)
        cmd.add_argument(
            "--dir",
            type=Path,
            default=Path(os.environ.get("DRA_DRIVER_CLUSTER_DIR") or DEFAULT_DIR),
            help="the cluster directory (default: $DRA_DRIVER_CLUSTER_DIR or %(default)s)",
        )
        if name == "up":
            cmd.add_argument("--node-name", default=DEFAULT_NODE_NAME)
            cmd.add_argument(
                "--bin-dir",
                type=Path,
                help="use these binaries instead of building or reusing them with build.sh",
            )
            cmd.add_argument(
                "--feature-gates",
                type=_feature_gates,
                default={},
                help="NAME=true|false,... for every component (default: 1.37's defaults)",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            cluster = LocalCluster(
                args.dir,
                bin_dir=args.bin_dir,
                node_name=args.node_name,
                feature_gates=args.feature_gates,
                detached=True,
            ).up()
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            return 0
        cluster = LocalCluster.load(args.dir)
        if args.command == "down":
            cluster.down()
            return 0
        running = cluster.status()
        for name, alive in running.items():
            print(f"{name:24} {'running' if alive else 'stopped'}")
        print(f"{'node':24} {cluster.node_name} ({cluster.tier or 'not started'})")
        print(f"{'kubeconfig':24} {cluster.kubeconfig}")
        for name, seconds in sorted(cluster.timings.items()):
            print(f"{'start-up ' + name:24} {seconds:.1f} s")
        return 0 if running and all(running.values()) else 1
    except ClusterError as err:
        print(f"python -m e2e.cluster {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
