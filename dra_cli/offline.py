"""``dra-driver allocate`` and ``explain -f``: the offline tools' work once the flags are read.

Imported by :mod:`dra_cli.main` only when one of these commands runs, so that ``--version``,
``--help`` and the agents' commands load no models, no allocator and no YAML.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from api.errors import (
    CelEvaluationError,
    DraDriverError,
    ExitCode,
    InvalidInputError,
    UnsatisfiableError,
)
from api.resource_v1 import AllocationResult, ResourceClaim, ResourceClaimStatus, dump
from dra_cli.output import write_document
from dra_cli.parallel import PendingRead
from dra_cli.parallel import load_inventory as load_inventory_in_parallel
from dra_driver.allocator import allocate, explain
from dra_driver.manifest_read import read_documents
from dra_driver.manifests import Inventory, load_inventory

__all__ = ["run_offline"]


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
    write_document({"apiVersion": "v1", "kind": "List", "items": items}, output, out)


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


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the command. Reading builds hundreds of
    thousands of objects that all stay alive to the end, and every full collection, which
    the allocator's own objects trigger too, would walk all of them again (a third of the
    command's time on large inputs); nothing made forms a cycle worth collecting before the
    command ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                # Everything made meanwhile is still in the youngest generation: the first
                # collection would walk it all once more. Freezing and unfreezing moves it to
                # the oldest generation without a walk (nothing else was frozen).
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def run_offline(
    args: argparse.Namespace,
    *,
    prog: str,
    stdin: TextIO,
    out: TextIO,
    reading: PendingRead | None = None,
) -> int:
    """``allocate`` or ``explain`` of the files ``args.filename``; the exit code (see
    :mod:`dra_cli.main`), each error on stderr. ``reading``: the files, already being read
    by another process (:func:`dra_cli.parallel.start_reading`)."""
    with _collector_paused():
        return _run(args, prog=prog, stdin=stdin, out=out, reading=reading)


def _run(
    args: argparse.Namespace,
    *,
    prog: str,
    stdin: TextIO,
    out: TextIO,
    reading: PendingRead | None,
) -> int:
    inventory: Inventory | None = None
    try:
        documents = reading.documents() if reading is not None else None
        if documents is None:
            documents = read_documents(args.filename, stdin)
        if args.serial:
            inventory = load_inventory(documents, lenient=args.lenient)
        else:
            inventory = load_inventory_in_parallel(documents, lenient=args.lenient)
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
