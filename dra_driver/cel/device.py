"""The ``device`` variable of a selector: one device of a ResourceSlice as CEL sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from api.quantity import Quantity
from api.semver import Semver

AttrValue: TypeAlias = int | bool | str | Semver | list[int] | list[bool] | list[str] | list[Semver]
"""A device attribute's value: ``int``, ``bool``, ``string``, ``version`` (a Semver), or
a list of one of them (the alpha list-typed attributes)."""


@dataclass(frozen=True, slots=True)
class CelDevice:
    """``device`` in a selector (CEL type ``kubernetes.DRADevice``).

    ``attributes`` and ``capacity`` are grouped by domain: the attribute
    ``productName`` of driver ``gpu.dra-driver.io`` is
    ``attributes["gpu.dra-driver.io"]["productName"]``. A domain that is absent
    reads as an empty map in CEL (see :class:`dra_driver.cel.runtime.DefaultingMap`).
    The mappings are read, never modified.
    """

    driver: str
    attributes: Mapping[str, Mapping[str, AttrValue]]
    capacity: Mapping[str, Mapping[str, Quantity]]
    allow_multiple_allocations: bool = False


def build_cel_device(
    driver: str,
    attributes: Mapping[str, AttrValue],
    capacity: Mapping[str, Quantity],
    allow_multiple_allocations: bool = False,
) -> CelDevice:
    """Group a device's qualified attribute and capacity names by domain.

    A name without a domain belongs to the driver's domain (``productName`` ->
    ``attributes[driver]["productName"]``); ``resource.kubernetes.io/pciBusID`` ->
    ``attributes["resource.kubernetes.io"]["pciBusID"]``. Values are taken as
    they are (no copy, no conversion): the caller builds them once per device and
    pool generation.
    """
    return CelDevice(
        driver=driver,
        attributes=_group(driver, attributes),
        capacity=_group(driver, capacity),
        allow_multiple_allocations=bool(allow_multiple_allocations),
    )


_V = TypeVar("_V")


def _group(driver: str, values: Mapping[str, _V]) -> dict[str, dict[str, _V]]:
    grouped: dict[str, dict[str, _V]] = {}
    for name, value in values.items():
        domain, sep, ident = name.partition("/")
        if not sep:
            domain, ident = driver, name
        inner = grouped.get(domain)
        if inner is None:
            inner = grouped[domain] = {}
        inner[ident] = value
    return grouped
