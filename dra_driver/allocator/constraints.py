"""Claim constraints during a search: matchAttribute and distinctAttribute (§7).

Both are checked incrementally as devices are picked and undone on backtrack;
they are assumed monotonic (once violated, adding devices never repairs them).
A constraint covers the requests it lists (``req`` covers all subrequests of
``req``, ``req/sub`` only that one), or every request when the list is empty.

Attribute values compare with their type: a string never equals an int, and
versions compare as their text (semver strings are canonical). List-valued
attributes (alpha) never satisfy a constraint.
"""

from __future__ import annotations

from api.resource_v1 import DeviceAttribute, parse_version
from dra_driver.allocator.inventory import InventoryDevice
from dra_driver.allocator.requests import ConstraintPlan, RequestPlan

#: (type, value) of an attribute; type "list" marks values that never compare equal.
TypedValue = tuple[str, object]


def typed_value(attribute: DeviceAttribute) -> TypedValue | None:
    """The attribute's value with its type, or None when no value field is set."""
    if attribute.int_ is not None:
        return ("int", attribute.int_)
    if attribute.bool_ is not None:
        return ("bool", attribute.bool_)
    if attribute.string is not None:
        return ("string", attribute.string)
    if attribute.version is not None:
        return ("version", attribute.version)
    if attribute.set_fields():
        return ("list", id(attribute))
    return None


class ConstraintState:
    """One constraint of one claim while its devices are being picked."""

    __slots__ = ("_values", "plan")

    def __init__(self, plan: ConstraintPlan) -> None:
        self.plan = plan
        self._values: list[TypedValue] = []

    def add(self, request: RequestPlan, device: InventoryDevice) -> bool:
        """Try to add ``device``; False (and nothing recorded) when it breaks the constraint."""
        if not self.plan.applies_to(request):
            return True
        attribute = device.attribute(self.plan.attribute)
        value = typed_value(attribute) if attribute is not None else None
        if value is None:
            return False
        if self.plan.distinct:
            if not self._distinct(value):
                return False
        elif self._values:
            first = self._values[0]
            if value[0] == "list" or value != first:
                return False
        self._values.append(value)
        return True

    def _distinct(self, value: TypedValue) -> bool:
        for existing in self._values:
            if existing[0] == "list":
                return False
            if existing[0] != value[0]:
                # Upstream stops comparing at the first value of another type.
                return True
            if existing[0] == "version":
                if parse_version(str(existing[1])) == parse_version(str(value[1])):
                    return False
            elif existing[1] == value[1]:
                return False
        return True

    def remove(self, request: RequestPlan) -> None:
        """Undo the last successful :meth:`add` for ``request``."""
        if self.plan.applies_to(request):
            self._values.pop()

    def would_reject(self, request: RequestPlan, device: InventoryDevice) -> bool:
        """Whether the device lacks the attribute altogether (for explanations)."""
        if not self.plan.applies_to(request):
            return False
        attribute = device.attribute(self.plan.attribute)
        return attribute is None or typed_value(attribute) is None
