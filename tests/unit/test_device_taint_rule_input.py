"""DeviceTaintRule as input: the model, the API server's validation (1.37), and
``dra-driver allocate`` / ``explain`` reading rules from manifests (exit 2 naming the rule
and the field when the API server would refuse it).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_input_fixtures import CLASS, SLICE

from api.errors import ExitCode
from api.resource_v1 import DeviceTaintRule, describe, dump, parse_object, strict_errors
from api.validation import validate
from dra_cli.main import main

RULE: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceTaintRule",
    "metadata": {"name": "drain-gpu-0"},
    "spec": {
        "deviceSelector": {"driver": "gpu.dra-driver.io", "pool": "node-a", "device": "gpu-0"},
        "taint": {"key": "example.com/maintenance", "value": "drain", "effect": "NoExecute"},
    },
}
SLICE_TWO = SLICE + "  - name: gpu-1\n    attributes:\n      index: {int: 1}\n"
CLAIM = """\
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: claim-0, namespace: default}
spec:
  devices:
    requests:
    - name: gpu
      exactly: {deviceClassName: gpu.dra-driver.io}
"""


def with_spec(**changes: Any) -> dict[str, Any]:
    """RULE with parts of its spec replaced (a value None removes the field)."""
    spec = {**RULE["spec"], **changes}
    return {**RULE, "spec": {k: v for k, v in spec.items() if v is not None}}


def errors_of(data: dict[str, Any]) -> dict[str, str]:
    obj = parse_object(data)
    return {e.path: e.message for e in [*validate(obj), *strict_errors(obj)]}


def test_a_rule_parses_round_trips_and_is_named_for_messages() -> None:
    obj = parse_object(RULE)
    assert isinstance(obj, DeviceTaintRule)
    assert obj.spec.device_selector is not None
    assert obj.spec.device_selector.device == "gpu-0"
    assert obj.spec.taint.effect == "NoExecute"
    assert dump(obj) == RULE
    assert describe(obj) == "taint rule drain-gpu-0"
    assert errors_of(RULE) == {}


def test_status_conditions_and_time_added_are_read() -> None:
    data = with_spec(taint={**RULE["spec"]["taint"], "timeAdded": "2026-01-02T03:04:05Z"})
    data["status"] = {
        "conditions": [
            {
                "type": "EvictionInProgress",
                "status": "False",
                "reason": "Completed",
                "message": "no pods",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ]
    }
    assert errors_of(data) == {}


@pytest.mark.parametrize(
    ("selector", "path"),
    [
        ({"driver": "Not_A_Driver!"}, "spec.deviceSelector.driver"),
        ({"driver": ""}, "spec.deviceSelector.driver"),
        ({"pool": "node_a"}, "spec.deviceSelector.pool"),
        ({"device": "GPU-0"}, "spec.deviceSelector.device"),
        ({"device": "gpu.0"}, "spec.deviceSelector.device"),
        # Removed in 1.35: the API server no longer serves them.
        ({"deviceClassName": "gpu"}, "spec.deviceSelector.deviceClassName"),
        ({"selectors": [{"cel": {"expression": "true"}}]}, "spec.deviceSelector.selectors"),
    ],
)
def test_the_selector_takes_driver_pool_and_device_names_only(
    selector: dict[str, Any], path: str
) -> None:
    assert path in errors_of(with_spec(deviceSelector=selector))


@pytest.mark.parametrize(
    ("taint", "path"),
    [
        ({"key": "", "effect": "NoSchedule"}, "spec.taint.key"),
        ({"key": "bad key", "effect": "NoSchedule"}, "spec.taint.key"),
        ({"key": "k", "value": "not a label value", "effect": "NoSchedule"}, "spec.taint.value"),
        ({"key": "k", "effect": "PreferNoSchedule"}, "spec.taint.effect"),
        ({"key": "k", "effect": ""}, "spec.taint.effect"),
    ],
)
def test_the_taint_follows_the_slice_taint_rules(taint: dict[str, Any], path: str) -> None:
    assert path in errors_of(with_spec(taint=taint))


@pytest.mark.parametrize("effect", ["None", "NoSchedule", "NoExecute"])
def test_every_effect_of_the_api_is_valid(effect: str) -> None:
    assert errors_of(with_spec(taint={"key": "k", "effect": effect})) == {}


def test_name_and_scope_are_checked() -> None:
    bad = {**RULE, "metadata": {"name": "Drain_GPU", "namespace": "default"}}
    assert set(errors_of(bad)) == {"metadata.name", "metadata.namespace"}


def test_a_rule_without_selector_or_with_an_empty_one_is_valid() -> None:
    assert errors_of(with_spec(deviceSelector=None)) == {}
    assert errors_of(with_spec(deviceSelector={})) == {}


# -- the command line ---------------------------------------------------------------------


def run(tmp_path: Path, command: str, *docs: str, output: str = "json") -> tuple[int, str]:
    path = tmp_path / "input.yaml"
    path.write_text("---\n".join(docs))
    out = io.StringIO()
    code = main([command, "-f", str(path), "-o", output], stdin=io.StringIO(), stdout=out)
    return code, out.getvalue()


def test_allocate_keeps_off_the_device_a_rule_taints(tmp_path: Path) -> None:
    code, out = run(tmp_path, "allocate", CLASS, SLICE_TWO, CLAIM, yaml.safe_dump(RULE))
    assert code == ExitCode.OK
    (item,) = json.loads(out)["items"]
    results = item["status"]["allocation"]["devices"]["results"]
    assert [r["device"] for r in results] == ["gpu-1"]


def test_allocate_fails_with_1_naming_the_rule_when_every_device_is_tainted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(tmp_path, "allocate", CLASS, SLICE, CLAIM, yaml.safe_dump(RULE))
    err = capsys.readouterr().err
    assert code == ExitCode.FAILED
    assert out == ""
    assert "(DeviceTaintRule drain-gpu-0)" in err
    assert "example.com/maintenance=drain:NoExecute" in err


def test_explain_names_the_rule_in_json_and_table(tmp_path: Path) -> None:
    docs = (CLASS, SLICE_TWO, CLAIM, yaml.safe_dump(RULE))
    code, out = run(tmp_path, "explain", *docs)
    assert code == ExitCode.OK
    (request,) = json.loads(out)["nodes"][0]["claims"][0]["requests"]
    assert [(t["device"], t["rule"]) for t in request["taintedDevices"]] == [
        ("gpu.dra-driver.io/node-a/gpu-0", "drain-gpu-0")
    ]
    code, table = run(tmp_path, "explain", *docs, output="table")
    assert code == ExitCode.OK
    assert "gpu-0 tainted example.com/maintenance=drain:NoExecute" in table
    assert "(DeviceTaintRule drain-gpu-0)" in table


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"taint": {"key": "k", "effect": "Sometimes"}}, "spec.taint.effect"),
        ({"deviceSelector": {"deviceClassName": "gpu"}}, "spec.deviceSelector.deviceClassName"),
        ({"deviceSelector": {"device": "GPU 0"}}, "spec.deviceSelector.device"),
    ],
)
def test_a_bad_rule_exits_2_naming_the_rule_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict[str, Any], field: str
) -> None:
    bad = yaml.safe_dump(with_spec(**spec))
    code, out = run(tmp_path, "allocate", CLASS, SLICE_TWO, CLAIM, bad)
    err = capsys.readouterr().err
    assert code == ExitCode.INVALID
    assert out == ""
    assert "taint rule drain-gpu-0" in err
    assert field in err
    assert "input.yaml" in err
