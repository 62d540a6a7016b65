"""Kubernetes' CEL environment for DRA device selectors, compiled to Python closures.

A selector goes lexer -> parser -> checker -> compiler; the closures run on the
value model of :mod:`.runtime` with the functions of :mod:`.library`. The public surface::

    compile_selector(expression) -> CompiledSelector   # memoised; CelCompileError
    CompiledSelector.evaluate(device) -> bool           # CelEvaluationError
    build_cel_device(driver, attributes, capacity, allow_multiple_allocations) -> CelDevice

Semantics are those of Kubernetes 1.36 (``k8s.io/dynamic-resource-allocation/cel``
on cel-go): the ``device`` variable, the Kubernetes libraries (lists, regex,
quantity, semver), strings v2, sets, optionals, ``cel.bind`` and the two-variable
comprehensions; CEL's error semantics (commutative ``&&``/``||``, missing keys
are errors, heterogeneous equality); upstream's limits on length and cost.
"""

from dra_driver.cel.device import AttrValue, CelDevice, build_cel_device
from dra_driver.cel.selector import CompiledSelector, compile_selector

__all__ = [
    "AttrValue",
    "CelDevice",
    "CompiledSelector",
    "build_cel_device",
    "compile_selector",
]
