"""``dra-driver gpus`` / ``kubectl dra gpus``: every GPU of the driver and who holds it.

Against live clusters (what the rows say: :mod:`dra_driver.gpu_view`). Per cluster, one
list per resource and no per-object call: the driver's ResourceSlices (field selector
``spec.driver``), every ResourceClaim, and, with ``--selector``, the matching Nodes.

Clusters: the kubeconfig's current context (``--kubeconfig``, else ``KUBECONFIG``, else
``~/.kube/config``, else the in-cluster configuration); ``--context NAME`` (repeatable)
or ``--all-contexts`` shows several, with a CLUSTER column and per-cluster totals, and a
cluster that cannot be read is one error row (exit 1 only when none could be read).

Below the totals, each cluster's fragmentation (:mod:`dra_driver.fragmentation`, from the same
lists; the whole cluster, whatever ``--node``, ``--free`` or ``--selector`` show).

``--check-pool-status`` (opt-in): per cluster, asks the upstream pool status API
(``ResourcePoolStatusRequest``, alpha) for the driver's pools and prints whether it agrees
with what these lists give on every pool (:mod:`dra_cli.pool_status`); a cluster that does
not serve the API is said so, and is not an error.

Exit codes: 0 shown; 1 no cluster could be read, or ``--check-pool-status`` found a
disagreement or got no answer; 2 invalid flags.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from api.errors import ExitCode
from dra_cli.output import write_document

__all__ = [
    "Clusters",
    "add_cluster_arguments",
    "add_gpus_arguments",
    "cluster_contexts",
    "read_cluster",
    "run_gpus",
]

DEFAULT_DRIVER = "gpu.dra-driver.io"


def add_cluster_arguments(sub: argparse.ArgumentParser) -> None:
    """The flags that choose the clusters (read by :func:`cluster_contexts`) and the driver's
    name: shared by the commands that read live clusters (``gpus``, ``top``)."""
    sub.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    sub.add_argument(
        "--context",
        action="append",
        default=[],
        help="kubeconfig context to show (repeatable; default: the current one)",
    )
    sub.add_argument("--all-contexts", action="store_true", help="every context of the kubeconfig")
    sub.add_argument(
        "--driver-name",
        default=os.environ.get("DRA_DRIVER_NAME", DEFAULT_DRIVER),
        help=f"the driver's name (env DRA_DRIVER_NAME; default {DEFAULT_DRIVER})",
    )


def add_gpus_arguments(sub: argparse.ArgumentParser) -> None:
    add_cluster_arguments(sub)
    sub.add_argument("--free", action="store_true", help="only GPUs nobody holds any part of")
    sub.add_argument("--node", action="append", default=[], help="only this node (repeatable)")
    sub.add_argument(
        "-l",
        "--selector",
        help="only nodes matching this label selector (as kubectl's, e.g. gpu=h100,zone!=b)",
    )
    sub.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json", "yaml"),
        default="table",
        help="table (default), wide (UUID, PCI bus ID, NUMA node), json or yaml",
    )
    sub.add_argument(
        "--check-pool-status",
        action="store_true",
        help="compare every pool with the cluster's ResourcePoolStatusRequest answer "
        "(resource.k8s.io/v1alpha3, alpha; creates and deletes one request per cluster)",
    )


def read_cluster(
    client: Any, driver_name: str, selector: str | None
) -> tuple[list[Any], list[Any], set[str] | None]:
    """The driver's slices, every claim and (with ``selector``) the selected node names of
    one cluster; ``client`` is an :class:`agent_kit.kube.ClusterClient`. Objects that do
    not decode are skipped (the API server accepted them; this view is read-only)."""
    from pydantic import ValidationError

    from api.resource_v1 import ResourceClaim, ResourceSlice

    def decoded(model: Any, items: Sequence[Any]) -> list[Any]:
        found = []
        for raw in items:
            try:
                found.append(model.model_validate(raw))
            except ValidationError:
                continue
        return found

    slices = client.list("resourceslices", field_selector=f"spec.driver={driver_name}")
    claims = client.list("resourceclaims")
    nodes: set[str] | None = None
    if selector:
        listed = client.list("nodes", label_selector=selector)
        nodes = {str((n.get("metadata") or {}).get("name")) for n in listed.items}
    return decoded(ResourceSlice, slices.items), decoded(ResourceClaim, claims.items), nodes


def cluster_contexts(args: argparse.Namespace) -> tuple[str | None, list[str | None]]:
    """The kubeconfig to read and the contexts the flags of :func:`add_cluster_arguments`
    name (None: the current one); ValueError or KubeConfigError for flags that cannot work."""
    from agent_kit.kube import default_kubeconfig, kubeconfig_contexts

    kubeconfig = args.kubeconfig or default_kubeconfig()
    if args.all_contexts:
        if kubeconfig is None:
            raise ValueError("--all-contexts needs a kubeconfig (--kubeconfig or KUBECONFIG)")
        names, _ = kubeconfig_contexts(kubeconfig)
        return kubeconfig, list(names)
    return kubeconfig, list(args.context) or [None]


@dataclass
class Clusters:
    """The clusters one ``gpus`` or ``top`` run reads, and the error of each that could not
    be read (the command's loop records them; the table shows each as one row)."""

    kubeconfig: str | None
    contexts: list[str | None]
    several: bool
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def chosen(
        cls, args: argparse.Namespace, given: Sequence[str | None] | None, prog: str
    ) -> Clusters | int:
        """The clusters the flags name (``given``: the contexts of the tests' ready
        clients instead); an exit code after printing why when the flags cannot work."""
        from agent_kit.kube import KubeConfigError

        try:
            kubeconfig, contexts = (None, list(given)) if given else cluster_contexts(args)
        except (ValueError, KubeConfigError) as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return ExitCode.INVALID
        return cls(kubeconfig, contexts, len(contexts) > 1 or bool(args.all_contexts))

    @staticmethod
    def label(context: str | None) -> str:
        return context or "(current)"

    def column(self, context: str | None) -> str:
        """The CLUSTER column of a row: the context's label when several are shown."""
        return self.label(context) if self.several else ""

    def single_failure(self, prog: str) -> int | None:
        """With one cluster that could not be read: print its error, return the exit code;
        with several, each error is a row of the table instead (None)."""
        if not self.errors or self.several:
            return None
        (error,) = self.errors.values()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return ExitCode.FAILED

    def none_read(self) -> bool:
        return bool(self.errors) and len(self.errors) == len(self.contexts)


def connect(kubeconfig: str | None, context: str | None) -> Any:
    """A client of one cluster (``context`` of ``kubeconfig``; None: the current one, or
    the in-cluster account). Raises KubeConfigError naming the file, the context, what
    went wrong and the fix: the error row of that cluster (shared by ``gpus`` and
    ``top``)."""
    from agent_kit.kube import KubeConfigError, KubernetesClient, load_api_client

    try:
        return KubernetesClient(load_api_client(kubeconfig, context=context))
    except KubeConfigError as err:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster configuration"
        context_text = f" context {context}" if context else ""
        raise KubeConfigError(
            f"{where}{context_text}: {err} (name a usable one with --kubeconfig or KUBECONFIG)"
        ) from None


def run_gpus(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    prog: str = "dra-driver",
    clients: dict[str | None, Any] | None = None,
) -> int:
    """Print the GPUs of the chosen clusters; ``clients`` (tests) maps a context (None:
    the current one) to a ready ClusterClient instead of loading the kubeconfig."""
    from agent_kit.kube import (
        ApiError,
        KubeConfigError,
    )
    from api.errors import InvalidInputError
    from dra_cli.pool_status import PoolStatusResult, check_pool_status
    from dra_driver.fragmentation import Fragmentation, measure_objects
    from dra_driver.gpu_view import GpuRow, gpu_rows, render_table, rows_json

    out = out or sys.stdout
    clusters = Clusters.chosen(args, list(clients) if clients else None, prog)
    if isinstance(clusters, int):
        return clusters
    rows: list[GpuRow] = []
    errors = clusters.errors
    fragmentation: dict[str, Fragmentation] = {}
    pool_status: dict[str, PoolStatusResult] = {}
    for context in clusters.contexts:
        column = clusters.column(context)
        try:
            client = (
                clients[context] if clients is not None else connect(clusters.kubeconfig, context)
            )
            slices, claims, nodes = read_cluster(client, args.driver_name, args.selector)
        except (ApiError, KubeConfigError) as err:
            errors[clusters.label(context)] = str(err)
            continue
        found = gpu_rows(slices, claims, driver_name=args.driver_name, cluster=column)
        # A slice the allocator cannot read: its rows still show, the figures do not.
        with contextlib.suppress(InvalidInputError):
            fragmentation[column] = measure_objects(slices, claims, args.driver_name)
        if getattr(args, "check_pool_status", False):
            try:
                pool_status[column] = check_pool_status(client, args.driver_name, slices, claims)
            except ApiError as err:
                pool_status[column] = PoolStatusResult(served=True, error=str(err))
        rows.extend(
            r
            for r in found
            if (nodes is None or r.node in nodes)
            and (not args.node or r.node in args.node)
            and (r.free or not args.free)
        )
    failed = clusters.single_failure(prog)
    if failed is not None:
        return failed
    if args.output in ("json", "yaml"):
        document = rows_json(rows, errors, fragmentation)
        if pool_status:
            document["poolStatus"] = [
                checked.to_json(cluster) for cluster, checked in sorted(pool_status.items())
            ]
        write_document(document, args.output, out)
    else:
        out.write(
            render_table(
                rows, wide=args.output == "wide", errors=errors, fragmentation=fragmentation
            )
        )
        for cluster, checked in sorted(pool_status.items()):
            out.write("".join(f"{line}\n" for line in checked.lines(cluster)))
    if clusters.none_read():
        return ExitCode.FAILED
    disagrees = any(f.served and not f.agrees for f in pool_status.values())
    return ExitCode.FAILED if disagrees else ExitCode.OK
