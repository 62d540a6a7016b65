"""The bad-input catalogue: malformed manifests through ``allocate`` and ``explain``.

One module on purpose (about 600 lines): the catalogue is one table of cases, read top to
bottom, and one check that runs each through both commands.

Each case is one input file that ``kubectl apply`` or the API server would refuse, changed
from a valid class, slice and claim in one place. Both tools, each a child process, must
exit 2 with a message naming the file, the object and the field (or, for a document that
does not parse, where it stops), print no traceback and stay under 200 MB of RSS. The runs
go in parallel, once per module; each case is then its own test.

One module on purpose (about 600 lines): one table of cases, read as one catalogue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_input_fixtures import CLAIM, CLASS, SLICE, Run, assert_refused, run_tool

CLAIM_0 = "claim default/claim-0"
SLICE_0 = "slice node-a-gpus"
CLASS_0 = "class gpu.dra-driver.io"
NODE = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n"
COMMANDS = ("allocate", "explain")


@dataclass(frozen=True)
class Case:
    id: str
    docs: tuple[str, ...]
    names: tuple[str, ...]
    """What the message must name besides the file: the object and the field."""


def edit(doc: str, old: str, new: str) -> str:
    assert old in doc, old
    return doc.replace(old, new, 1)


def claim(old: str, new: str, *names: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (CLASS, SLICE, edit(CLAIM, old, new)), (CLAIM_0, *names)


def device(old: str, new: str, *names: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (CLASS, edit(SLICE, old, new), CLAIM), (SLICE_0, *names)


def device_class(old: str, new: str, *names: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (edit(CLASS, old, new), SLICE, CLAIM), (CLASS_0, *names)


def opaque(parameters: str) -> str:
    return (
        "\n    config:\n    - opaque:\n        driver: gpu.dra-driver.io\n"
        f"        parameters: {parameters}\n"
    )


EXACTLY = "      exactly: {deviceClassName: gpu.dra-driver.io}\n"
REQ = "spec.devices.requests[0]"
GPU_CONFIG = "{apiVersion: gpu.dra-driver.io/v1alpha1, kind: GpuConfig"


def _cases() -> Iterator[Case]:
    def case(id: str, built: tuple[tuple[str, ...], tuple[str, ...]]) -> Case:
        return Case(id, *built)

    # Documents that do not parse or are not objects: the file and where it stops.
    yield Case("unclosed-flow", (CLASS, "kind: [unclosed\n"), ("line",))
    yield Case("tab-indent", ("apiVersion: v1\nkind: Node\nmetadata:\n\tname: x\n",), ("line",))
    yield Case("list-document", (CLASS, "- a\n- b\n"), ("must be an object",))
    yield Case("scalar-document", ("just text\n",), ("must be an object",))
    yield Case("undefined-alias", (CLASS, edit(CLAIM, "name: gpu", "name: *nope")), ("alias",))
    yield Case("json-trailing", ('{"apiVersion": "v1", "kind": "Node"} }',), ("line",))
    yield Case("list-items-not-list", ("apiVersion: v1\nkind: List\nitems: 5\n",), ("items",))
    yield Case("missing-kind", ("apiVersion: v1\nmetadata: {name: n}\n",), ("kind",))
    yield Case(
        "missing-api-version",
        (edit(CLASS, "apiVersion: resource.k8s.io/v1\n", ""),),
        ("apiVersion",),
    )
    yield Case(
        "kind-typo",
        (CLASS, SLICE, edit(CLAIM, "kind: ResourceClaim", "kind: ResourceClam")),
        ("ResourceClam", "ResourceClaim"),
    )
    yield Case(
        "kind-lowercase",
        (CLASS, SLICE, edit(CLAIM, "kind: ResourceClaim", "kind: resourceclaim")),
        ("resourceclaim",),
    )
    yield Case(
        "group-typo",
        (edit(CLASS, "resource.k8s.io/v1", "resouce.k8s.io/v1"), SLICE, CLAIM),
        ("resouce.k8s.io/v1",),
    )
    yield Case(
        "version-typo",
        (edit(CLASS, "resource.k8s.io/v1", "resource.k8s.io/v2"), SLICE, CLAIM),
        ("resource.k8s.io/v2",),
    )
    yield Case(
        "custom-resource",
        (CLASS, SLICE, CLAIM, "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"),
        ("Widget", "example.com/v1"),
    )
    yield Case(
        "node-typo",
        (CLASS, SLICE, CLAIM, edit(NODE, "kind: Node", "kind: Nodes")),
        ("Nodes", "v1 Node"),
    )

    yield Case(
        "duplicate-key",
        (CLASS, SLICE, edit(CLAIM, "    - name: gpu\n", "    - name: gpu\n      name: gpu2\n")),
        ("line 27", 'mapping key "name" already defined at line 26'),
    )
    yield Case(
        "annotation-10MB",
        (
            CLASS,
            SLICE,
            edit(
                CLAIM,
                "namespace: default}",
                f"namespace: default, annotations: {{note: {'x' * (10 * 1024 * 1024)}}}}}",
            ),
        ),
        (CLAIM_0, "too large", "3145728"),
    )
    # Claims: the API server's strict decoding and validation.
    yield case(
        "unknown-field",
        claim(
            "{deviceClassName:",
            "{cuont: 2, deviceClassName:",
            f"{REQ}.exactly.cuont",
            "unknown field",
        ),
    )
    yield case(
        "unknown-metadata-field",
        claim(
            "namespace: default}",
            "namespace: default, labelz: {a: b}}",
            "metadata.labelz",
            "unknown field",
        ),
    )
    yield case("unknown-top-field", claim("spec:\n", "sepc: {}\nspec:\n", "sepc", "unknown field"))
    yield case(
        "count-string",
        claim(
            "{deviceClassName:",
            "{count: '2', deviceClassName:",
            f"{REQ}.exactly.count",
            "must be an integer",
        ),
    )
    yield case(
        "count-int64",
        claim(
            "{deviceClassName:",
            "{count: 9223372036854775808, deviceClassName:",
            f"{REQ}.exactly.count",
            "int64",
        ),
    )
    yield case(
        "count-negative",
        claim(
            "{deviceClassName:",
            "{count: -1, deviceClassName:",
            f"{REQ}.exactly.count",
            "greater than zero",
        ),
    )
    yield case(
        "count-float",
        claim(
            "{deviceClassName:", "{count: 1.5, deviceClassName:", f"{REQ}.exactly.count", "integer"
        ),
    )
    yield case(
        "allocation-mode",
        claim(
            "{deviceClassName:",
            "{allocationMode: Some, deviceClassName:",
            f"{REQ}.exactly.allocationMode",
            '"Some"',
        ),
    )
    yield case(
        "empty-class-name",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{deviceClassName: ''}",
            f"{REQ}.exactly.deviceClassName",
        ),
    )
    yield case(
        "missing-class-name",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{count: 1}",
            f"{REQ}.exactly.deviceClassName",
            "required",
        ),
    )
    yield case(
        "missing-class",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{deviceClassName: nope}",
            f"{REQ}.exactly.deviceClassName",
            '"nope"',
        ),
    )
    yield case("request-name", claim("name: gpu", "name: GPU_0", f"{REQ}.name"))
    yield case(
        "request-without-name",
        claim("    - name: gpu\n      exactly:", "    - exactly:", f"{REQ}.name"),
    )
    yield case(
        "exactly-and-first-available",
        claim(
            EXACTLY,
            EXACTLY + "      firstAvailable: [{name: a, deviceClassName: gpu.dra-driver.io}]\n",
            REQ,
        ),
    )
    yield case("no-exactly", claim(EXACTLY, "", REQ))
    yield case(
        "admin-access-string",
        claim(
            "{deviceClassName:",
            "{adminAccess: 'true', deviceClassName:",
            f"{REQ}.exactly.adminAccess",
            "boolean",
        ),
    )
    yield case(
        "empty-selector",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{deviceClassName: gpu.dra-driver.io, selectors: [{cel: {expression: ''}}]}",
            f"{REQ}.exactly.selectors[0].cel.expression",
        ),
    )
    yield case(
        "selector-without-cel",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{deviceClassName: gpu.dra-driver.io, selectors: [{}]}",
            f"{REQ}.exactly.selectors[0].cel",
        ),
    )
    yield case(
        "cel-syntax",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{deviceClassName: gpu.dra-driver.io, selectors: [{cel: {expression: 'device.a =='}}]}",
            f"{REQ}.exactly.selectors[0].cel.expression",
        ),
    )
    yield case(
        "cel-type",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{deviceClassName: gpu.dra-driver.io, selectors: [{cel: {expression: '1 + true'}}]}",
            f"{REQ}.exactly.selectors[0].cel.expression",
        ),
    )
    yield case(
        "toleration-operator",
        claim(
            "{deviceClassName: gpu.dra-driver.io}",
            "{deviceClassName: gpu.dra-driver.io, tolerations: [{key: a, operator: Maybe}]}",
            f"{REQ}.exactly.tolerations[0].operator",
        ),
    )
    yield case(
        "too-many-first-available",
        claim(
            EXACTLY,
            "      firstAvailable: ["
            + ", ".join(f"{{name: s{i}, deviceClassName: gpu.dra-driver.io}}" for i in range(9))
            + "]\n",
            f"{REQ}.firstAvailable",
            "8",
        ),
    )
    yield case(
        "constraint-attribute",
        claim(
            EXACTLY,
            EXACTLY + "    constraints: [{matchAttribute: 'not a name!'}]\n",
            "spec.devices.constraints[0].matchAttribute",
        ),
    )
    yield case(
        "constraint-unknown-request",
        claim(
            EXACTLY,
            EXACTLY
            + "    constraints: [{requests: [nope], matchAttribute: gpu.dra-driver.io/model}]\n",
            "spec.devices.constraints[0].requests[0]",
        ),
    )
    yield case(
        "config-without-driver",
        claim(
            EXACTLY,
            EXACTLY + "    config: [{opaque: {parameters: {}}}]\n",
            "spec.devices.config[0].opaque.driver",
        ),
    )
    yield case(
        "opaque-too-large",
        claim(
            EXACTLY,
            EXACTLY + opaque("{blob: " + "x" * 11000 + "}"),
            "spec.devices.config[0].opaque.parameters",
            "too large",
        ),
    )
    yield case(
        "gpu-config-strategy",
        claim(
            EXACTLY,
            EXACTLY + opaque(GPU_CONFIG + ", sharing: {strategy: TimeSlice}}"),
            "spec.devices.config[0].opaque.parameters.sharing.strategy",
        ),
    )
    yield case(
        "gpu-config-unknown-field",
        claim(
            EXACTLY,
            EXACTLY + opaque(GPU_CONFIG + ", sharing: {stratgy: MPS}}"),
            "spec.devices.config[0].opaque.parameters.sharing",
        ),
    )
    yield case(
        "gpu-config-kind",
        claim(
            EXACTLY,
            EXACTLY + opaque("{apiVersion: gpu.dra-driver.io/v1alpha1, kind: GPUConfig}"),
            "spec.devices.config[0].opaque.parameters",
            "kind",
        ),
    )
    yield case(
        "gpu-config-percentage",
        claim(
            EXACTLY,
            EXACTLY
            + opaque(
                GPU_CONFIG
                + ", sharing: {strategy: MPS, mpsConfig: {defaultActiveThreadPercentage: 150}}}"
            ),
            "defaultActiveThreadPercentage",
        ),
    )
    yield Case(
        "claim-name",
        (CLASS, SLICE, edit(CLAIM, "name: claim-0,", "name: Claim_0,")),
        ("claim default/Claim_0", "metadata.name"),
    )
    yield Case(
        "claim-namespace",
        (CLASS, SLICE, edit(CLAIM, "namespace: default}", "namespace: Default}")),
        ("claim Default/claim-0", "metadata.namespace"),
    )
    yield case(
        "label-yes",
        claim(
            "namespace: default}",
            "namespace: default, labels: {gpu: yes}}",
            "metadata.labels.gpu",
            "must be a string",
        ),
    )
    yield case(
        "label-n",
        claim(
            "namespace: default}",
            "namespace: default, labels: {gpu: n}}",
            "metadata.labels.gpu",
            "must be a string",
        ),
    )
    yield case(
        "label-key",
        claim(
            "namespace: default}",
            "namespace: default, labels: {'bad key': a}}",
            "metadata.labels",
            "label key",
        ),
    )
    yield case(
        "annotations-300KiB",
        claim(
            "namespace: default}",
            "namespace: default, annotations: {note: " + "x" * (300 * 1024) + "}}",
            "metadata.annotations",
            "262144",
        ),
    )
    yield Case("duplicate-claim", (CLASS, SLICE, CLAIM, CLAIM), (CLAIM_0, "defined twice"))

    # Slices.
    yield case(
        "attribute-int64",
        device(
            "{int: 0}",
            "{int: 9223372036854775808}",
            "spec.devices[0].attributes.index.int",
            "int64",
        ),
    )
    yield case(
        "attribute-two-values",
        device("{int: 0}", "{int: 0, string: a}", "spec.devices[0].attributes.index"),
    )
    yield case("attribute-no-value", device("{int: 0}", "{}", "spec.devices[0].attributes.index"))
    yield case(
        "attribute-string-long",
        device(
            "{int: 0}",
            "{string: " + "a" * 65 + "}",
            "spec.devices[0].attributes.index.string",
            "64",
        ),
    )
    yield case(
        "attribute-string-yes",
        device(
            "{int: 0}",
            "{string: yes}",
            "spec.devices[0].attributes.index.string",
            "must be a string",
        ),
    )
    yield case(
        "attribute-string-y",
        device(
            "{int: 0}", "{string: y}", "spec.devices[0].attributes.index.string", "must be a string"
        ),
    )
    yield case(
        "attribute-version",
        device("{int: 0}", "{version: '1.2'}", "spec.devices[0].attributes.index.version"),
    )
    yield case(
        "attribute-name",
        device("index: {int: 0}", "'bad name': {int: 0}", "spec.devices[0].attributes"),
    )
    yield case(
        "capacity-quantity",
        device(
            "attributes:\n",
            "capacity: {memory: {value: lots}}\n    attributes:\n",
            "spec.devices[0].capacity.memory.value",
        ),
    )
    yield case(
        "driver-name", device("driver: gpu.dra-driver.io", "driver: GPU_Driver", "spec.driver")
    )
    yield case(
        "generation-string",
        device("generation: 1,", "generation: '1',", "spec.pool.generation", "must be an integer"),
    )
    yield case(
        "missing-slice-count",
        device(", resourceSliceCount: 1}", "}", "spec.pool.resourceSliceCount", "required"),
    )
    yield case(
        "node-and-all-nodes",
        device("nodeName: node-a\n", "nodeName: node-a\n  allNodes: true\n", "spec"),
    )
    yield case("device-name", device("name: gpu-0", "name: GPU_0", "spec.devices[0].name"))
    yield case(
        "device-unknown-field",
        device(
            "name: gpu-0",
            "name: gpu-0\n    atributes: {}",
            "spec.devices[0].atributes",
            "unknown field",
        ),
    )
    yield case(
        "taint-effect",
        device(
            "name: gpu-0",
            "name: gpu-0\n    taints: [{key: a, effect: Sometimes}]",
            "spec.devices[0].taints[0].effect",
        ),
    )
    yield case(
        "too-many-devices",
        device(
            "  - name: gpu-0\n",
            "".join(f"  - {{name: d{i}}}\n" for i in range(129)) + "  - name: gpu-0\n",
            "spec.devices",
            "128",
        ),
    )

    # Classes and nodes.
    yield Case(
        "class-namespace",
        (
            edit(
                CLASS, "{name: gpu.dra-driver.io}", "{name: gpu.dra-driver.io, namespace: default}"
            ),
            SLICE,
            CLAIM,
        ),
        ("class default/gpu.dra-driver.io", "metadata.namespace"),
    )
    yield case(
        "class-selector-cel",
        device_class(
            "'device.driver == \"gpu.dra-driver.io\"'",
            "'device.nope('",
            "spec.selectors[0].cel.expression",
        ),
    )
    yield case(
        "class-extended-resource",
        device_class(
            "spec:\n", "spec:\n  extendedResourceName: 'no slash'\n", "spec.extendedResourceName"
        ),
    )
    yield case(
        "class-gpu-config",
        device_class(
            "spec:\n",
            "spec:\n  config:\n  - opaque: {driver: gpu.dra-driver.io, parameters: "
            + GPU_CONFIG
            + ", sharing: {strategy: TimeSlicing, timeSlicingConfig: {interval: Forever}}}}\n",
            "spec.config[0].opaque.parameters.sharing.timeSlicingConfig.interval",
        ),
    )
    yield Case(
        "node-unknown-field",
        (CLASS, SLICE, CLAIM, NODE + "spec: {unschedulabel: true}\n"),
        ("node node-a", "spec.unschedulabel", "unknown field"),
    )
    yield Case(
        "node-taint-effect",
        (CLASS, SLICE, CLAIM, NODE + "spec: {taints: [{key: a}]}\n"),
        ("node node-a", "spec.taints[0].effect"),
    )


CASES = list(_cases())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Run]:
    """Every case through both tools, four children at a time."""

    def one(job: tuple[Case, str, Path]) -> tuple[tuple[str, str], Run]:
        case, command, folder = job
        path = folder / "input.yaml"
        path.write_text("---\n".join(case.docs))
        return (case.id, command), run_tool(folder, command, "-f", str(path))

    # Folders made here, one thread: mktemp's numbering is not thread-safe.
    jobs = [
        (case, command, tmp_path_factory.mktemp(f"{case.id}-{command}"))
        for case in CASES
        for command in COMMANDS
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, jobs))


def test_the_catalogue_is_large_and_its_names_are_unique() -> None:
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
@pytest.mark.parametrize("command", COMMANDS)
def test_each_malformed_manifest_is_refused_by_name(
    outcomes: dict[tuple[str, str], Run], case: Case, command: str
) -> None:
    assert_refused(outcomes[case.id, command], "input.yaml", *case.names)


def test_the_valid_base_allocates(tmp_path: Path) -> None:
    path = tmp_path / "input.yaml"
    path.write_text("---\n".join([CLASS, SLICE, CLAIM, NODE]))
    result = run_tool(tmp_path, "allocate", "-f", str(path))
    assert result.code == 0, result.stderr
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"]["allocation"]["devices"]["results"][0]["device"] == "gpu-0"
