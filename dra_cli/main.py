"""``dra-driver``: one command line, one subcommand per job.

Offline tools (no cluster needed):

``dra-driver allocate -f FILE [-f FILE ...] [--node NODE] [--policy NAME] [-o json|yaml]``
    Allocate every pending claim of the input together, as for one pod (all or
    nothing, one node), and print them with ``status.allocation`` filled in. A Pod
    asking for extended resources (``nvidia.com/gpu: 2``) adds the claim the scheduler
    would make for it (README: "Asking for a GPU").
``dra-driver explain -f FILE [...] [--node NODE] [-o table|json]``
    Say, per node and request, why the pending claims do or do not fit.
``dra-driver explain claim NAMESPACE/NAME [--node NODE] [-o table|json]``
    The same for one claim of the live cluster (KUBECONFIG).

Components: ``kubelet-plugin`` (the node agent) and ``controller`` (the cluster
agent: placement of gated pods' claims, Events, cluster pools, DeviceClasses).

``dra-driver taints clear [--node-state-dir DIR] DEVICE|--all``
    On a node: remove a GPU's health taints on purpose, saved by the kubelet plugin
    (:mod:`dra_cli.taints`).

Exit codes: 0 success; 1 valid input that cannot be allocated (the reason per
claim on stderr, nothing on stdout); 2 invalid input (the message names the
file, the object and the field: input is judged as ``kubectl apply`` and the API
server would judge it, unless ``--lenient``). Every flag has an environment twin
(``DRA_DRIVER_<FLAG>``), read when the flag is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from api.errors import (
    CelEvaluationError,
    DraDriverError,
    ExitCode,
    InvalidInputError,
    UnsatisfiableError,
)
from api.resource_v1 import AllocationResult, ResourceClaim, ResourceClaimStatus, dump
from dra_cli.cluster_agent import (
    add_controller_arguments,
    run_controller,
    run_explain_claim,
)
from dra_cli.demo import run_demo
from dra_cli.discover import add_discover_arguments, run_discover
from dra_cli.migrate import add_migrate_arguments, run_migrate
from dra_cli.node_agent import add_kubelet_plugin_arguments, run_kubelet_plugin
from dra_cli.taints import add_taints_arguments, run_taints
from dra_driver import __version__
from dra_driver.allocator import POLICIES, allocate, explain
from dra_driver.manifests import Inventory, load_inventory, read_documents


def _env(flag: str, default: str | None = None) -> str | None:
    """The environment twin of ``--flag``: ``DRA_DRIVER_FLAG``."""
    return os.environ.get("DRA_DRIVER_" + flag.upper().replace("-", "_"), default)


def _env_flag(flag: str) -> bool:
    """A boolean flag's environment twin: ``1``, ``true`` or ``yes`` turn it on."""
    return (_env(flag) or "").strip().lower() in ("1", "true", "yes")


def _add_lenient(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--lenient",
        action="store_true",
        default=_env_flag("lenient"),
        help="warn instead of failing on what kubectl apply and the API server refuse but "
        "the tools can read past: an unknown kind, apiVersion or field, an integer beyond "
        "int64, an invalid GpuConfig (env DRA_DRIVER_LENIENT=true; default: strict)",
    )


#: Set by the image build (deploy/Dockerfile, build argument GIT_REVISION).
REVISION_ENV = "DRA_DRIVER_GIT_REVISION"


def version_text(environ: Mapping[str, str] | None = None) -> str:
    """``<version> (revision <git revision>)``; the revision is ``unknown`` outside an image
    built with one (a source checkout: ``git rev-parse HEAD`` says it)."""
    revision = (os.environ if environ is None else environ).get(REVISION_ENV, "").strip()
    return f"{__version__} (revision {revision or 'unknown'})"


def build_parser(prog: str = "dra-driver") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Kubernetes DRA driver for GPUs: offline allocation tools and components.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version_text()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_inputs(sub: argparse.ArgumentParser, *, required: bool = True) -> None:
        sub.add_argument(
            "-f",
            "--filename",
            action="append",
            required=required,
            metavar="FILE",
            help="manifest file, directory of manifests, or - for stdin (repeatable)",
        )
        sub.add_argument(
            "--node",
            default=_env("node"),
            help="allocate on this node only (env DRA_DRIVER_NODE; default: the policy picks)",
        )
        sub.add_argument(
            "--policy",
            default=_env("policy", "first-fit"),
            choices=POLICIES,
            help="placement policy (env DRA_DRIVER_POLICY; default first-fit, the scheduler's)",
        )
        _add_lenient(sub)

    allocate_cmd = commands.add_parser(
        "allocate",
        help="allocate the pending claims of the input together, as for one pod",
        description="Allocate every ResourceClaim without status.allocation in the input, "
        "all or nothing, on one node; claims with an allocation count as devices in use.",
    )
    add_inputs(allocate_cmd)
    allocate_cmd.add_argument(
        "-o",
        "--output",
        choices=("json", "yaml"),
        default=_env("output", "json"),
        help="output format (env DRA_DRIVER_OUTPUT; default json)",
    )

    explain_cmd = commands.add_parser(
        "explain",
        help="say per node and request why the pending claims fit or not",
        description="Explain, per node and per request, which devices fit the pending "
        "claims and why the others do not.",
    )
    add_inputs(explain_cmd, required=False)
    explain_cmd.add_argument(
        "target",
        nargs="*",
        metavar="claim NAMESPACE/NAME",
        help="explain this claim of the live cluster (KUBECONFIG) instead of files",
    )
    explain_cmd.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=_env("output", "table"),
        help="output format (env DRA_DRIVER_OUTPUT; default table)",
    )

    demo_cmd = commands.add_parser(
        "demo",
        help="the example claims through every placement policy, on mock GPUs",
        description="Allocate each scenario of the examples folder with its shared "
        "inventory under several policies and print what each chose.",
    )
    demo_cmd.add_argument(
        "--examples",
        default=_env("examples", "deploy/examples"),
        help="examples folder (env DRA_DRIVER_EXAMPLES; default deploy/examples)",
    )
    demo_cmd.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        help="policy to show (repeatable; default first-fit, binpack and most-capable)",
    )
    _add_lenient(demo_cmd)

    discover_cmd = commands.add_parser(
        "discover",
        help="print the node's ResourceSlices as YAML, without a cluster",
        description="Discover this node's GPUs (NVML or mock) and print the ResourceSlices "
        "the kubelet plugin would publish, one YAML document per slice.",
    )
    add_discover_arguments(discover_cmd)

    migrate_cmd = commands.add_parser(
        "migrate",
        help="a k8s-device-plugin config as this driver's values, classes and claims",
        description="Read device-plugin config files and print the chart values, the "
        "DeviceClasses that keep its resource names working and each workload's two forms.",
    )
    add_migrate_arguments(migrate_cmd)

    plugin_cmd = commands.add_parser(
        "kubelet-plugin",
        help="run the node agent: kubelet registration, prepare/unprepare, ResourceSlices",
        description="Register with the kubelet, prepare and unprepare claims (CDI specs, "
        "checkpoint), publish this node's ResourceSlices and turn GPU health events into "
        "device taints, until SIGTERM. Every flag has an environment twin.",
    )
    add_kubelet_plugin_arguments(plugin_cmd)

    taints_cmd = commands.add_parser(
        "taints",
        help="on a node: clear GPUs' health taints on purpose (saved by the kubelet plugin)",
        description="Manage the health taints the kubelet plugin keeps in its directory.",
    )
    add_taints_arguments(taints_cmd)

    controller_cmd = commands.add_parser(
        "controller",
        help="run the cluster agent: placement of gated pods' claims, Events, pools, classes",
        description="Place the claims of pods gated by <driver>/placement under a policy, "
        "explain unallocatable claims as Events, publish cluster-level pools and manage the "
        "driver's DeviceClasses; one leader among replicas.",
    )
    add_controller_arguments(controller_cmd)
    return parser


def _allocated(claim: ResourceClaim, allocation: AllocationResult) -> dict[str, Any]:
    copy = claim.model_copy(deep=True)
    copy.status = ResourceClaimStatus(allocation=allocation)
    return dump(copy)


def run_allocate(args: argparse.Namespace, inventory: Inventory, out: TextIO) -> int:
    pending = inventory.pending_claims
    snapshot = inventory.snapshot()
    if not pending:
        print("dra-driver: no pending claims in the input; nothing to allocate", file=sys.stderr)
        _write_list([], args.output, out)
        return ExitCode.OK
    result = allocate(
        snapshot, pending, node=args.node, policy=args.policy, excluded=inventory.excluded_nodes
    )
    items = [
        _allocated(claim, allocation)
        for claim, allocation in zip(pending, result.results, strict=True)
    ]
    _write_list(items, args.output, out)
    where = f"node {result.node}" if result.node else "node-independent devices"
    print(
        f"dra-driver: allocated {len(items)} claim(s) on {where} (policy {args.policy})",
        file=sys.stderr,
    )
    return ExitCode.OK


def _write_list(items: list[dict[str, Any]], output: str, out: TextIO) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    if output == "yaml":
        yaml.safe_dump(document, out, sort_keys=False)
    else:
        json.dump(document, out, indent=2)
        out.write("\n")


def run_explain(args: argparse.Namespace, inventory: Inventory, out: TextIO) -> int:
    snapshot = inventory.snapshot()
    explanation = explain(
        snapshot, inventory.pending_claims, node=args.node, excluded=inventory.excluded_nodes
    )
    if args.output == "json":
        json.dump(explanation.to_json(), out, indent=2)
        out.write("\n")
    else:
        out.write(explanation.render_table())
        if not explanation.render_table().endswith("\n"):
            out.write("\n")
    return ExitCode.OK


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "dra-driver",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    args = build_parser(prog).parse_args(argv)
    out = stdout or sys.stdout
    if args.command == "demo":
        policies = args.policy or ["first-fit", "binpack", "most-capable"]
        return run_demo(Path(args.examples), policies, out, lenient=args.lenient)
    if args.command == "discover":
        return run_discover(args, out, prog=prog)
    if args.command == "migrate":
        return run_migrate(args, out, prog=prog, stdin=stdin)
    if args.command == "kubelet-plugin":
        return run_kubelet_plugin(args, prog=f"{prog} kubelet-plugin")
    if args.command == "taints":
        return run_taints(args, prog=f"{prog} taints", out=out)
    if args.command == "controller":
        return run_controller(args, prog=prog)
    if args.command == "explain" and args.target:
        return run_explain_claim(
            args.target, node=args.node, output=args.output, out=out, prog=prog
        )
    if not args.filename:
        print(
            f"{prog}: error: {args.command} needs -f FILE (or, for explain, claim NAMESPACE/NAME)",
            file=sys.stderr,
        )
        return ExitCode.INVALID
    inventory: Inventory | None = None
    try:
        inventory = load_inventory(
            read_documents(args.filename, stdin or sys.stdin), lenient=args.lenient
        )
        for warning in inventory.warnings:
            print(f"{prog}: warning: {warning}", file=sys.stderr)
        if args.command == "allocate":
            return run_allocate(args, inventory, out)
        return run_explain(args, inventory, out)
    except InvalidInputError as exc:
        located = inventory.locate(exc) if inventory is not None else exc
        print(f"{prog}: error: {located}", file=sys.stderr)
        return ExitCode.INVALID
    except UnsatisfiableError as exc:
        print(f"{prog}: cannot allocate: {exc}", file=sys.stderr)
        for claim, reason in exc.reasons.items():
            print(f"  {claim}: {reason}", file=sys.stderr)
        return ExitCode.FAILED
    except CelEvaluationError as exc:
        print(f"{prog}: cannot allocate: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except DraDriverError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return ExitCode.INVALID


def kubectl_main() -> None:
    """``kubectl dra ...``: the same offline tools, under kubectl's plugin name."""
    sys.exit(main(prog="kubectl dra"))


__all__ = [
    "REVISION_ENV",
    "build_parser",
    "main",
    "version_text",
]
