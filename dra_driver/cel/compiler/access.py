"""Closures that read a value: macro variables, ``device`` and its fields, fields and indexes.

The device fast paths read frame slot 1 directly: ``device.driver`` and co.,
and ``device.attributes[<domain>]`` / ``device.capacity[<domain>]`` (an absent
domain is an empty map). A field or a constant string key of a plain ``dict``
is looked up inline; anything else goes through the run-time helpers.
"""

from __future__ import annotations

from typing import Any

from dra_driver.cel.compiler.code import Code, Fn
from dra_driver.cel.compiler.macros import Failed
from dra_driver.cel.runtime import (
    EMPTY_MAP,
    DefaultingMap,
    Frame,
    device_field,
    has_field,
    index_optional,
    no_such_key,
    select,
    select_optional,
)
from dra_driver.cel.runtime import index as index_value


def variable(slot: int, *, holds_errors: bool) -> Code:
    """A macro variable; a ``cel.bind`` variable re-raises the error its value raised."""
    if holds_errors:

        def bound(s: Frame) -> Any:
            value = s[slot]
            if type(value) is Failed:
                raise value.error
            return value

        return Code(bound)
    return Code(lambda s: s[slot])


def device() -> Code:
    """The variable ``device`` (frame slot 1)."""
    return Code(lambda s: s[1])


def device_select(name: str) -> Code:
    """``device.<name>``."""
    if name == "driver":
        return Code(lambda s: s[1].driver)
    if name == "allowMultipleAllocations":
        return Code(lambda s: s[1].allow_multiple_allocations)
    if name == "attributes":
        return Code(lambda s: DefaultingMap(s[1].attributes))
    if name == "capacity":
        return Code(lambda s: DefaultingMap(s[1].capacity))
    return Code(lambda s: device_field(s[1], name))


def domain_lookup(which: str, domain: Any) -> Code:
    """``device.attributes[domain]`` (``which``: ``attributes`` or ``capacity``): the
    domain's map, empty when absent."""
    if type(domain) is not str:
        return Code(lambda s: EMPTY_MAP)
    if which == "attributes":

        def attributes(s: Frame) -> Any:
            found = s[1].attributes.get(domain)
            return EMPTY_MAP if found is None else found

        return Code(attributes)

    def capacity(s: Frame) -> Any:
        found = s[1].capacity.get(domain)
        return EMPTY_MAP if found is None else found

    return Code(capacity)


def has(operand: Fn, name: str) -> Code:
    """``has(operand.name)``."""

    def test(s: Frame) -> bool:
        m = operand(s)
        if type(m) is dict:
            return name in m
        return has_field(m, name)

    return Code(test)


def optional_field(operand: Fn, name: str) -> Code:
    """``operand.?name``, or ``.name`` on an optional value."""
    return Code(lambda s: select_optional(operand(s), name))


def field(operand: Fn, name: str) -> Code:
    """``operand.name``: a map's key or an object's field."""

    def read(s: Frame) -> Any:
        m = operand(s)
        if type(m) is dict:
            try:
                return m[name]
            except KeyError:
                raise no_such_key(name) from None
        return select(m, name)

    return Code(read)


def index(operand: Fn, key: Code, *, optional: bool) -> Code:
    """``operand[key]``, or ``operand[?key]`` (and an index of an optional) when ``optional``."""
    key_fn = key.fn
    if optional:
        return Code(lambda s: index_optional(operand(s), key_fn(s)))
    if key.constant and type(key.value) is str:
        name = key.value

        def lookup(s: Frame) -> Any:
            m = operand(s)
            if type(m) is dict:
                try:
                    return m[name]
                except KeyError:
                    raise no_such_key(name) from None
            return index_value(m, name)

        return Code(lookup)
    return Code(lambda s: index_value(operand(s), key_fn(s)))
