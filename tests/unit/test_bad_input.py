"""Hostile and malformed input through the offline tools, as a user runs them: a subprocess.

Each case must end in exit 2 with a message naming the file (and, past parsing, the object
and the field), with no traceback and a bounded peak RSS, however the input was crafted:
YAML alias bombs, deep nesting and recursive aliases are refused while reading, before
anything of the document is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_fixtures import CLAIM, CLASS, SLICE, assert_refused, run_tool

from api import limits
from api.errors import ExitCode

# -- defect 4: bounded while reading ------------------------------------------------------


def alias_bomb(levels: int = 8) -> str:
    """A DeviceClass whose opaque parameters expand tenfold per level: 10**levels strings."""
    lines = [f'        l0: &l0 ["{"x" * 40}", "{"y" * 40}"]']
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"        l{level}: &l{level} [{refs}]")
    body = "\n".join(lines)
    return f"""\
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {{name: bomb}}
spec:
  config:
  - opaque:
      driver: gpu.dra-driver.io
      parameters:
{body}
"""


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    for command in ("allocate", "explain"):
        result = run_tool(tmp_path, command, "-f", str(path))
        assert_refused(
            result, "bomb.yaml", "class bomb", "aliases", "line 14", str(limits.MAX_OBJECT_BYTES)
        )


@pytest.mark.parametrize("depth", [limits.MAX_NESTING_DEPTH + 1, 5000, 200_000])
def test_deep_nesting_is_invalid_input_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {x: "
        + "[" * depth
        + "]" * depth
        + "}\n"
    )
    assert_refused(run_tool(tmp_path, "allocate", "-f", str(path)), "deep.yaml", "nest", "line 4")


def test_a_recursive_alias_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(
        CLASS + "---\n" + CLAIM.replace("spec:\n", "spec:\n  devices: &d {requests: [*d]}\n", 1)
    )
    assert_refused(run_tool(tmp_path, "allocate", "-f", str(path)), "loop.yaml#1", "alias")


def test_one_object_past_the_request_body_limit_is_refused(tmp_path: Path) -> None:
    big = "x" * (limits.MAX_OBJECT_BYTES + 10)
    path = tmp_path / "big.yaml"
    path.write_text(CLASS + "---\n" + SLICE.replace("{name: node-a-gpus}", f"{{name: {big}}}"))
    assert_refused(run_tool(tmp_path, "allocate", "-f", str(path)), "big.yaml#1", "too large")


def test_aliases_within_bounds_are_read_as_kubectl_reads_them(tmp_path: Path) -> None:
    # Anchors and aliases are legal YAML: a second device sharing the first's attributes.
    shared = SLICE.replace("    attributes:\n", "    attributes: &attrs\n")
    shared += "  - {name: gpu-1, attributes: *attrs}\n"
    path = tmp_path / "ok.yaml"
    path.write_text("---\n".join([CLASS, shared, CLAIM]))
    result = run_tool(tmp_path, "allocate", "-f", str(path))
    assert result.code == ExitCode.OK, result.stderr
    assert '"device": "gpu-0"' in result.stdout


# -- defect 5: judged as kubectl apply and the API server judge it ------------------------


def one_file(tmp_path: Path, *docs: str) -> str:
    path = tmp_path / "input.yaml"
    path.write_text("---\n".join(docs))
    return str(path)


def claim_with(old: str, new: str) -> str:
    assert old in CLAIM
    return CLAIM.replace(old, new, 1)


def slice_with(old: str, new: str) -> str:
    assert old in SLICE
    return SLICE.replace(old, new, 1)


GPU_CONFIG_TYPO = claim_with(
    "      exactly: {deviceClassName: gpu.dra-driver.io}\n",
    "      exactly: {deviceClassName: gpu.dra-driver.io}\n"
    "    config:\n"
    "    - opaque:\n"
    "        driver: gpu.dra-driver.io\n"
    "        parameters:\n"
    "          apiVersion: gpu.dra-driver.io/v1alpha1\n"
    "          kind: GpuConfig\n"
    "          sharing: {strategy: TimeSlice}\n",
)

#: (id, the input's documents, what the message names), each refused by kubectl apply or
#: the API server and, before strict reading, accepted by the offline tools.
LENIENCY = [
    (
        "unknown-field",
        [CLASS, SLICE, claim_with("{deviceClassName:", "{cuont: 2, deviceClassName:")],
        ["claim default/claim-0", "spec.devices.requests[0].exactly.cuont", "unknown field"],
    ),
    (
        "kind-typo",
        [CLASS, SLICE, CLAIM, CLAIM.replace("kind: ResourceClaim", "kind: ResourceClam")],
        ["input.yaml#3", "ResourceClam", 'did you mean "resource.k8s.io/v1 ResourceClaim"'],
    ),
    (
        "api-version-typo",
        [CLASS, SLICE, CLAIM, CLASS.replace("resource.k8s.io/v1", "resource.k8s.io/v1beta3")],
        ["input.yaml#3", "resource.k8s.io/v1beta3", "resource.k8s.io/v1 DeviceClass"],
    ),
    (
        "int-beyond-int64",
        [CLASS, slice_with("{int: 0}", "{int: 9223372036854775808}"), CLAIM],
        ["slice node-a-gpus", "spec.devices[0].attributes.index.int", "int64"],
    ),
    (
        "yaml-1.1-boolean",
        [CLASS, slice_with("index: {int: 0}", "model: {string: n}"), CLAIM],
        ["slice node-a-gpus", "spec.devices[0].attributes.model.string", "must be a string"],
    ),
    (
        "annotations-over-256KiB",
        [
            CLASS,
            SLICE,
            claim_with(
                "namespace: default}",
                f"namespace: default, annotations: {{note: {'x' * (256 * 1024)}}}}}",
            ),
        ],
        ["claim default/claim-0", "metadata.annotations", str(256 * 1024)],
    ),
    (
        "gpu-config-refused-at-prepare",
        [CLASS, SLICE, GPU_CONFIG_TYPO],
        [
            "claim default/claim-0",
            "spec.devices.config[0].opaque.parameters.sharing.strategy",
            '"TimeSlice"',
        ],
    ),
]


@pytest.mark.parametrize(("docs", "names"), [c[1:] for c in LENIENCY], ids=[c[0] for c in LENIENCY])
def test_what_the_api_server_refuses_is_invalid_input(
    tmp_path: Path, docs: list[str], names: list[str]
) -> None:
    path = one_file(tmp_path, *docs)
    for command in ("allocate", "explain"):
        assert_refused(run_tool(tmp_path, command, "-f", path), "input.yaml", *names)


@pytest.mark.parametrize(
    "docs",
    [c[1] for c in LENIENCY if c[0] != "annotations-over-256KiB" and c[0] != "yaml-1.1-boolean"],
    ids=[
        c[0] for c in LENIENCY if c[0] != "annotations-over-256KiB" and c[0] != "yaml-1.1-boolean"
    ],
)
def test_lenient_keeps_reading_with_a_warning(tmp_path: Path, docs: list[str]) -> None:
    path = one_file(tmp_path, *docs)
    result = run_tool(tmp_path, "allocate", "--lenient", "-f", path)
    assert result.code == ExitCode.OK, result.stderr
    assert "warning" in result.stderr
    assert '"device": "gpu-0"' in result.stdout
