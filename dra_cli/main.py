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
``dra-driver gpus [--free] [--node NODE] [-l SELECTOR] [--context NAME | --all-contexts] [-o ...]``
    Every GPU of the driver in live clusters and who holds it (:mod:`dra_cli.gpus`).
``dra-driver top [-n NAMESPACE] [--node NODE] [--namespace-filter NS] [--context ...] [-o ...]``
    Live GPU memory and utilisation per claim, read from the kubelet plugins' metrics
    through the API server's pod proxy (:mod:`dra_cli.top`).

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
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from dra_driver import __version__

# The modules of each subcommand are imported when that subcommand runs (or its flags are
# built): ``--version`` and ``--help`` load argparse and this module, no models, allocator,
# YAML, gRPC or Kubernetes client.


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


def _add_inputs(sub: argparse.ArgumentParser, *, required: bool = True) -> None:
    from dra_driver.policy_names import POLICIES

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
    sub.add_argument(
        "--serial",
        action="store_true",
        default=_env_flag("serial"),
        help="read and check the input in this process only (env DRA_DRIVER_SERIAL=true; "
        "default: a large input is read and checked with a second process where a second "
        "processor is free, with the same results)",
    )


def _allocate_arguments(sub: argparse.ArgumentParser) -> None:
    _add_inputs(sub)
    sub.add_argument(
        "-o",
        "--output",
        choices=("json", "yaml"),
        default=_env("output", "json"),
        help="output format (env DRA_DRIVER_OUTPUT; default json)",
    )


def _explain_arguments(sub: argparse.ArgumentParser) -> None:
    _add_inputs(sub, required=False)
    sub.add_argument(
        "target",
        nargs="*",
        metavar="claim NAMESPACE/NAME",
        help="explain this claim of the live cluster (KUBECONFIG) instead of files",
    )
    sub.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=_env("output", "table"),
        help="output format (env DRA_DRIVER_OUTPUT; default table)",
    )


def _demo_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_driver.policy_names import POLICIES

    sub.add_argument(
        "--examples",
        default=_env("examples", "deploy/examples"),
        help="examples folder (env DRA_DRIVER_EXAMPLES; default deploy/examples)",
    )
    sub.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        help="policy to show (repeatable; default first-fit, binpack and most-capable)",
    )
    _add_lenient(sub)


def _discover_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.discover import add_discover_arguments

    add_discover_arguments(sub)


def _migrate_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.migrate import add_migrate_arguments

    add_migrate_arguments(sub)


def _gpus_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.gpus import add_gpus_arguments

    add_gpus_arguments(sub)


def _top_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.top import add_top_arguments

    add_top_arguments(sub)


def _kubelet_plugin_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.node_agent import add_kubelet_plugin_arguments

    add_kubelet_plugin_arguments(sub)


def _taints_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.taints import add_taints_arguments

    add_taints_arguments(sub)


def _controller_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.cluster_agent import add_controller_arguments

    add_controller_arguments(sub)


#: Each subcommand: its help line, its description and what adds its flags.
_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "allocate": (
        "allocate the pending claims of the input together, as for one pod",
        "Allocate every ResourceClaim without status.allocation in the input, "
        "all or nothing, on one node; claims with an allocation count as devices in use.",
        _allocate_arguments,
    ),
    "explain": (
        "say per node and request why the pending claims fit or not",
        "Explain, per node and per request, which devices fit the pending "
        "claims and why the others do not.",
        _explain_arguments,
    ),
    "demo": (
        "the example claims through every placement policy, on mock GPUs",
        "Allocate each scenario of the examples folder with its shared "
        "inventory under several policies and print what each chose.",
        _demo_arguments,
    ),
    "discover": (
        "print the node's ResourceSlices as YAML, without a cluster",
        "Discover this node's GPUs (NVML or mock) and print the ResourceSlices "
        "the kubelet plugin would publish, one YAML document per slice.",
        _discover_arguments,
    ),
    "migrate": (
        "a k8s-device-plugin config as this driver's values, classes and claims",
        "Read device-plugin config files and print the chart values, the "
        "DeviceClasses that keep its resource names working and each workload's two forms.",
        _migrate_arguments,
    ),
    "gpus": (
        "every GPU of the driver in live clusters, who holds it, what is free",
        "One table of every GPU the driver publishes (node, product, memory, sharing, "
        "health) and the claims and pods holding it, with totals per node and product; "
        "several clusters with --context or --all-contexts.",
        _gpus_arguments,
    ),
    "top": (
        "live GPU memory and utilisation per claim, from the kubelet plugins' metrics",
        "One table of the GPU memory and utilisation each claim's containers use now, per "
        "node, device and claim, read from every kubelet plugin's per-claim usage metrics "
        "through the API server's pod proxy; usage no claim could be named for on rows of "
        "its own.",
        _top_arguments,
    ),
    "kubelet-plugin": (
        "run the node agent: kubelet registration, prepare/unprepare, ResourceSlices",
        "Register with the kubelet, prepare and unprepare claims (CDI specs, "
        "checkpoint), publish this node's ResourceSlices and turn GPU health events into "
        "device taints, until SIGTERM. Every flag has an environment twin.",
        _kubelet_plugin_arguments,
    ),
    "taints": (
        "on a node: clear GPUs' health taints on purpose (saved by the kubelet plugin)",
        "Manage the health taints the kubelet plugin keeps in its directory.",
        _taints_arguments,
    ),
    "controller": (
        "run the cluster agent: placement of gated pods' claims, Events, pools, classes",
        "Place the claims of pods gated by <driver>/placement under a policy, "
        "explain unallocatable claims as Events, publish cluster-level pools and manage the "
        "driver's DeviceClasses; one leader among replicas.",
        _controller_arguments,
    ),
}


def build_parser(
    prog: str = "dra-driver", *, command: str | None = None
) -> argparse.ArgumentParser:
    """The command line's parser. Every subcommand's flags, or, given ``command``, only that
    subcommand's (the others are listed by name and help line, which is all ``--help``
    shows), so that a command imports only the modules its own flags need."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Kubernetes DRA driver for GPUs: offline allocation tools and components.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version_text()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_line, description, add_arguments) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_line, description=description)
        if command is None or command == name:
            add_arguments(sub)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv``: its first word that is not an option (the only
    options before it, ``--help`` and ``--version``, take no value); "" if none."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "dra-driver",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog, command=_command_in(words)).parse_args(words)
    out = stdout or sys.stdout
    if args.command == "demo":
        from dra_cli.demo import run_demo

        policies = args.policy or ["first-fit", "binpack", "most-capable"]
        return run_demo(Path(args.examples), policies, out, lenient=args.lenient)
    if args.command == "discover":
        from dra_cli.discover import run_discover

        return run_discover(args, out, prog=prog)
    if args.command == "migrate":
        from dra_cli.migrate import run_migrate

        return run_migrate(args, out, prog=prog, stdin=stdin)
    if args.command == "gpus":
        from dra_cli.gpus import run_gpus

        return run_gpus(args, out=out, prog=prog)
    if args.command == "top":
        from dra_cli.top import run_top

        return run_top(args, out=out, prog=prog)
    if args.command == "kubelet-plugin":
        from dra_cli.node_agent import run_kubelet_plugin

        return run_kubelet_plugin(args, prog=f"{prog} kubelet-plugin")
    if args.command == "taints":
        from dra_cli.taints import run_taints

        return run_taints(args, prog=f"{prog} taints", out=out)
    if args.command == "controller":
        from dra_cli.cluster_agent import run_controller

        return run_controller(args, prog=prog)
    if args.command == "explain" and args.target:
        from dra_cli.cluster_agent import run_explain_claim

        return run_explain_claim(
            args.target, node=args.node, output=args.output, out=out, prog=prog
        )
    if not args.filename:
        from api.errors import ExitCode

        print(
            f"{prog}: error: {args.command} needs -f FILE (or, for explain, claim NAMESPACE/NAME)",
            file=sys.stderr,
        )
        return ExitCode.INVALID
    from dra_cli.parallel import start_reading

    # Read the files in a second process while this one imports the models and allocator.
    reading = None if args.serial else start_reading(args.filename)
    from dra_cli.offline import run_offline

    return run_offline(args, prog=prog, stdin=stdin or sys.stdin, out=out, reading=reading)


#: Commands whose process ends without tearing down its objects (:func:`console_main`).
_QUICK_EXIT = frozenset({"allocate", "explain"})


def console_main() -> None:
    """The ``dra-driver`` command: :func:`main`, then the process ends."""
    _end(main(), sys.argv[1:])


def kubectl_main() -> None:
    """``kubectl dra ...``: the same offline tools, under kubectl's plugin name."""
    _end(main(prog="kubectl dra"), sys.argv[1:])


def _end(code: int, words: Sequence[str]) -> NoReturn:
    """Exit with ``code``. After ``allocate`` and ``explain``, without the interpreter's
    teardown: it would free every object of the input one by one (about a tenth of a second
    for a large one) only for the process to end; the output is flushed first, and these
    commands leave nothing else to finish (no exit handler, file or thread of theirs)."""
    if _command_in(words) not in _QUICK_EXIT:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        os._exit(120)  # what the interpreter returns when it cannot flush at exit
    os._exit(code)


__all__ = [
    "REVISION_ENV",
    "build_parser",
    "console_main",
    "kubectl_main",
    "main",
    "version_text",
]
