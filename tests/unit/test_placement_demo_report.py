"""The demo's check that no device ended up with two claims (what the confirm step ensures)."""

from __future__ import annotations

from typing import Any

from e2e.demo_report import devices_held_twice


def _claim(name: str, *results: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"allocation": {"devices": {"results": list(results)}}},
    }


def _result(device: str, **fields: Any) -> dict[str, Any]:
    return {
        "request": "gpu",
        "driver": "gpu.dra-driver.io",
        "pool": "n",
        "device": device,
        **fields,
    }


def test_a_device_of_two_claims_is_named_with_both() -> None:
    claims = [_claim("a", _result("gpu-0")), _claim("b", _result("gpu-0")), _claim("c")]
    assert devices_held_twice(claims) == {"n/gpu-0": ["a", "b"]}


def test_distinct_devices_shares_and_admin_access_are_fine() -> None:
    claims = [
        _claim("a", _result("gpu-0"), _result("gpu-1")),
        _claim("b", _result("gpu-2", shareID="1")),
        _claim("c", _result("gpu-2", shareID="2")),
        _claim("admin", _result("gpu-0", adminAccess=True)),
        {"metadata": {"name": "pending"}},
    ]
    assert devices_held_twice(claims) == {}
