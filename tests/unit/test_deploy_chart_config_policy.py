"""The chart's GpuConfig admission policy (templates/config-policy.yml), as rendered.

What the unit level can hold it to: it matches the three kinds that carry opaque configs on
create and update, reads each kind's configs at the path the CLI names, selects this
driver's configs by the driver name value, and knows exactly the fields and values of
api/gpu_config.py (a field or enum value added there and not here fails). That its CEL
refuses a bad GpuConfig with the CLI's message is for the real API server:
tests/cluster/test_cluster_config_policy.py.
"""

from __future__ import annotations

import re
from typing import Any

from chart_fixtures import (
    DEFAULT,
    DRIVER,
    documents,
    find_one,
    helm_fixture,  # noqa: F401  (pytest finds it as `helm`)
    helm_template,
)
from pydantic import BaseModel

from api import gpu_config

NAME = "dra-driver-gpu-configs"


def _policy(objects: list[dict[str, Any]] = DEFAULT) -> dict[str, Any]:
    spec: dict[str, Any] = find_one(objects, "ValidatingAdmissionPolicy", NAME)["spec"]
    return spec


def _variable(name: str, objects: list[dict[str, Any]] = DEFAULT) -> str:
    (expression,) = [v["expression"] for v in _policy(objects)["variables"] if v["name"] == name]
    text: str = expression
    return text


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _quoted(text: str) -> set[str]:
    return set(re.findall(r"'([^']*)'", text))


def test_it_checks_claims_templates_and_classes_on_create_and_update() -> None:
    policy = _policy()
    assert policy["failurePolicy"] == "Fail"
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["resource.k8s.io"]
    assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]
    # Not their status: an allocation copies the configs, and must not be refused.
    assert sorted(rule["resources"]) == [
        "deviceclasses",
        "resourceclaims",
        "resourceclaimtemplates",
    ]
    assert "matchConditions" not in policy
    binding = find_one(DEFAULT, "ValidatingAdmissionPolicyBinding", NAME)["spec"]
    assert binding == {"policyName": NAME, "validationActions": ["Deny"]}


def test_each_kind_is_read_at_the_path_the_cli_names() -> None:
    prefix, configs = _variable("prefix"), _variable("configs")
    for resource, path in (
        ("deviceclasses", "spec.config"),
        ("resourceclaimtemplates", "spec.spec.devices.config"),
    ):
        assert f"request.resource.resource == '{resource}' ? '{path}'" in prefix
        assert f"object.{path.replace('.', '.?')}.orValue([])" in configs
    assert prefix.endswith("'spec.devices.config'")
    assert configs.endswith("object.spec.?devices.?config.orValue([])")


def test_an_update_checks_only_the_parameters_it_adds_or_changes() -> None:
    # An object made before the policy must still lose its finalizer and be deleted.
    old = _variable("oldParameters")
    assert old.startswith("request.operation != 'UPDATE' ? [] :")
    for path in ("spec.config", "spec.spec.devices.config", "spec.devices.config"):
        assert f"oldObject.{path.replace('.', '.?')}.orValue([])" in old
    assert f".filter(c, c.?opaque.?driver.orValue('') == \"{DRIVER}\")" in old
    assert "!(c.opaque.parameters in variables.oldParameters)" in _variable("ours")


def test_only_the_configs_of_this_driver_are_checked(helm: str) -> None:
    assert f"c.?opaque.?driver.orValue('') == \"{DRIVER}\"" in _variable("ours")
    objects = documents(helm_template(helm, "--set", "driverName=gpu.example.com"))
    assert '== "gpu.example.com"' in _variable("ours", objects)
    (validation,) = _policy(objects)["validations"]
    assert "invalid GpuConfig of driver gpu.example.com: " in validation["messageExpression"]


def test_it_knows_exactly_the_fields_of_the_gpu_config_model() -> None:
    shape = _variable("shapeErrors")
    lists = [_quoted(m) for m in re.findall(r"!\(k in \[([^\]]*)\]\)", shape)]
    assert lists == [
        _aliases(gpu_config.GpuConfig),
        _aliases(gpu_config.GpuSharing),
        _aliases(gpu_config.MpsConfig),
    ]
    assert _aliases(gpu_config.TimeSlicingConfig) == {"interval"}
    assert "k != 'interval'" in shape
    kind = _variable("kindErrors")
    assert f"['apiVersion', '{gpu_config.API_VERSION}'], ['kind', '{gpu_config.KIND}']" in kind


def test_it_knows_exactly_the_values_of_the_gpu_config_enums() -> None:
    values = _variable("valueErrors")
    strategies = ", ".join(f"'{s}'" for s in gpu_config.SHARING_STRATEGIES)
    assert f".strategy in [{strategies}]" in values
    intervals = ", ".join(f"'{i}'" for i in gpu_config.TIME_SLICE_INTERVALS)
    assert f".interval in [{intervals}]" in values
    # The message lists them as the CLI does (api.validation.unsupported_value).
    assert "supported values " + ", ".join(f'"{s}"' for s in gpu_config.SHARING_STRATEGIES) in (
        values
    )
    assert ".defaultActiveThreadPercentage >= 1" in values
    assert ".defaultActiveThreadPercentage <= 100" in values
    assert values.count(".isGreaterThan(quantity('0'))") == 2


def test_the_message_names_every_error_found() -> None:
    (validation,) = _policy()["validations"]
    assert validation["expression"] == "size(variables.errors) == 0"
    assert validation["messageExpression"] == (
        f"'invalid GpuConfig of driver {DRIVER}: ' + variables.errors.join('; ')"
    )
    assert validation["reason"] == "Invalid"


def test_config_policy_enabled_false_leaves_it_out(helm: str) -> None:
    objects = documents(helm_template(helm, "--set", "configPolicy.enabled=false"))
    names = {o["metadata"]["name"] for o in objects if o["kind"].startswith("ValidatingAdmission")}
    assert names and NAME not in names
