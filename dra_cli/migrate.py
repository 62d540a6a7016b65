"""``dra-driver migrate``: a k8s-device-plugin config, in this driver's terms.

Reads the device plugin's ``version: v1`` config files (``-f``, repeatable: a file, a
directory of them, a ConfigMap manifest holding several named ones, or ``-`` for stdin)
and prints the chart values, the DeviceClasses that keep the device plugin's resource
names working (``spec.extendedResourceName``) and, per workload pattern, the
ResourceClaimTemplate form beside the unchanged extended-resource form::

    dra-driver migrate -f time-slicing-config.yaml --gpu-memory 80Gi
    dra-driver migrate -f configmap.yaml -l nvidia.com/device-plugin.config=a100 \\
        -l nvidia.com/mig.config=all-1g.10gb
    dra-driver migrate -f config.yaml --part classes | kubectl apply -f -

``--part values`` prints the Helm values only, ``--part classes`` the DeviceClasses to apply,
``--part manifests`` every Kubernetes object (the classes and the workload patterns, for
``dra-driver allocate``); the default prints all, the values first, as multi-document YAML
(``-o json``: one object).

Exit codes: 0 printed (what carries over only partly is a warning on stderr); 2 invalid
input: the message names the file, the config, the key path and the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

import yaml

from api.errors import ExitCode, InvalidInputError
from api.quantity import Quantity
from dra_driver.migration import (
    CONFIG_LABEL,
    MIG_CONFIG_LABEL,
    MigrationOutput,
    build_output,
    parse_labels,
    plan_migration,
    read_configs,
    select_configs,
)
from dra_driver.slices import DEFAULT_DRIVER_NAME

__all__ = ["PARTS", "add_migrate_arguments", "run_migrate"]

PARTS = ("all", "values", "classes", "manifests")


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``migrate`` flags."""
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="device-plugin config file, directory of them, ConfigMap manifest holding "
        "named configs, or - for stdin (repeatable)",
    )
    parser.add_argument(
        "-l",
        "--node-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a label of the nodes to migrate: {CONFIG_LABEL}=NAME picks that named "
        f"config, {MIG_CONFIG_LABEL}=all-<profile> names their MIG profile (repeatable)",
    )
    parser.add_argument(
        "--mig-profile",
        action="append",
        default=[],
        metavar="PROFILE",
        help="a MIG profile the nodes use, e.g. 1g.10gb: a class for nvidia.com/mig-<profile> "
        "(migStrategy mixed) or the profile of nvidia.com/gpu (single) (repeatable)",
    )
    parser.add_argument(
        "--gpu-memory",
        metavar="QUANTITY",
        default=os.environ.get("DRA_DRIVER_GPU_MEMORY"),
        help="memory of one GPU of these nodes, e.g. 80Gi: each share of a shared GPU asks "
        "for 1/replicas of it (needed when the config shares GPUs; env DRA_DRIVER_GPU_MEMORY)",
    )
    parser.add_argument(
        "--driver-name",
        default=os.environ.get("DRA_DRIVER_NAME", DEFAULT_DRIVER_NAME),
        help=f"this driver's name, as in the chart's driverName (env DRA_DRIVER_NAME; "
        f"default {DEFAULT_DRIVER_NAME})",
    )
    parser.add_argument(
        "--part",
        choices=PARTS,
        default=os.environ.get("DRA_DRIVER_PART", "all"),
        help="what to print: all (default), values (Helm values), classes (the DeviceClasses "
        "to apply) or manifests (DeviceClasses, ResourceClaimTemplates, Pods) "
        "(env DRA_DRIVER_PART)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        default=os.environ.get("DRA_DRIVER_OUTPUT", "yaml"),
        help="output format (env DRA_DRIVER_OUTPUT; default yaml, multi-document)",
    )


def _gpu_memory(text: str | None) -> Quantity | None:
    if text is None:
        return None
    try:
        memory = Quantity.parse(text)
    except ValueError as exc:
        raise InvalidInputError(f"{text!r}: {exc}", obj="--gpu-memory") from None
    if memory.sign() <= 0:
        raise InvalidInputError(f"{text!r}: must be positive, e.g. 80Gi", obj="--gpu-memory")
    return memory


def _write_yaml(output: MigrationOutput, part: str, out: TextIO) -> None:
    sections: list[tuple[str, Any]] = []
    if part in ("all", "values"):
        sections.append(
            (
                "Helm values of deploy/helm/dra-driver (helm upgrade --install -f FILE)",
                output.values,
            )
        )
    if part in ("all", "manifests"):
        for device_class in output.chart_classes:
            name = device_class["metadata"]["name"]
            extended = device_class["spec"]["extendedResourceName"]
            sections.append(
                (
                    f"DeviceClass {name}: answers to {extended}; the chart makes it from the "
                    "values above (shown for dra-driver allocate, not to apply)",
                    device_class,
                )
            )
    if part in ("all", "classes", "manifests"):
        for device_class in output.classes:
            name = device_class["metadata"]["name"]
            extended = device_class["spec"]["extendedResourceName"]
            sections.append((f"DeviceClass {name}: answers to {extended}", device_class))
    if part in ("all", "manifests"):
        for pattern in output.patterns:
            for obj in pattern.claim_form:
                sections.append((f"{pattern.title}: claim form", obj))
            if pattern.extended is not None:
                sections.append((f"{pattern.title}: extended-resource form", pattern.extended))
    for index, (comment, document) in enumerate(sections):
        if index:
            out.write("---\n")
        out.write(f"# {comment}\n")
        yaml.safe_dump(document, out, sort_keys=False)


def run_migrate(
    args: argparse.Namespace,
    out: TextIO,
    *,
    prog: str = "dra-driver",
    stdin: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Read, plan and print; return the exit code."""
    errors = err or sys.stderr
    try:
        labels = parse_labels(args.node_label)
        configs = select_configs(read_configs(args.filename, stdin or sys.stdin), labels)
        plan = plan_migration(
            configs, driver_name=args.driver_name, labels=labels, mig_profiles=args.mig_profile
        )
        output = build_output(plan, gpu_memory=_gpu_memory(args.gpu_memory))
    except InvalidInputError as exc:
        print(f"{prog}: error: {exc}", file=errors)
        return ExitCode.INVALID
    for warning in output.warnings:
        print(f"{prog}: warning: {warning}", file=errors)
    if args.output == "json":
        document = output.to_json()
        if args.part == "values":
            document = {"helmValues": document["helmValues"]}
        elif args.part in ("classes", "manifests"):
            items = output.classes if args.part == "classes" else output.manifests()
            document = {"apiVersion": "v1", "kind": "List", "items": items}
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        _write_yaml(output, args.part, out)
    names = ", ".join(c.name for c in configs)
    print(
        f"{prog}: migrated config(s) {names}: {len(output.classes)} DeviceClass(es) to "
        f"apply, {len(output.chart_classes)} the chart makes from the values, "
        f"{len(output.patterns)} workload pattern(s), {len(output.warnings)} warning(s)",
        file=errors,
    )
    return ExitCode.OK
