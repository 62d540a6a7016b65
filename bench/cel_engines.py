"""Compare CEL engines on DRA device selectors; print the figures as JSON.

Engines: ``dra_driver.cel`` (this project's), and when importable ``celpy``
(PyPI ``cel-python``), ``cel`` (PyPI ``common-expression-language``) and
``cel_expr_python`` (PyPI ``cel-expr-python``), installed with the ``bench``
extra or ``pip install cel-python common-expression-language cel-expr-python``.
The product never imports the other engines.

For each engine: compile and evaluation time of realistic selectors (µs, best
of several rounds), and a feature matrix: which selectors of the spec
(``spec/cel.md`` §5) and which Kubernetes semantics (missing keys are errors,
absent domains are empty maps, a version compared with a string is an error,
optional syntax, ``cel.bind``...) each engine gets right. Kubernetes'
``quantity()``/``semver()`` and their methods are registered as custom
functions where the engine allows: as Python objects in celpy, as strings
parsed by the functions in the other two (they cannot hold custom objects).

Usage: ``python bench/cel_engines.py [--quick]``. Numbers only; nothing here
passes or fails on time.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.quantity import Quantity
from api.semver import Semver
from dra_driver.cel import CelDevice, build_cel_device, compile_selector

DRIVER = "gpu.nvidia.com"

# -- devices, in this project's terms; each engine adapter converts them ------------------

ATTRIBUTES: dict[str, dict[str, Any]] = {
    "gpu": {
        "type": "gpu",
        "uuid": "GPU-8a7e5cc2-3fb9-4c0b-a1e3-bd1cf9d4e6f1",
        "productName": "NVIDIA H100 80GB HBM3",
        "architecture": "Hopper",
        "cudaComputeCapability": Semver.parse("9.0.0"),
        "driverVersion": Semver.parse("550.54.15"),
        "index": 0,
        "resource.kubernetes.io/pciBusID": "0000:3b:00.0",
    },
    "mig": {
        "type": "mig",
        "uuid": "MIG-0f2d9c1e-8f43-5d2a-9e62-4b7c1a9d3e55",
        "productName": "NVIDIA A100-SXM4-40GB",
        "profile": "1g.10gb",
        "cudaComputeCapability": Semver.parse("8.0.0"),
        "driverVersion": Semver.parse("535.104.5"),
    },
}
CAPACITY: dict[str, dict[str, Quantity]] = {
    "gpu": {"memory": Quantity.parse("80Gi")},
    "mig": {"memory": Quantity.parse("9728Mi")},
}

# -- what is measured ---------------------------------------------------------------------

TIMED = {
    "driver-and-type": (
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
    ),
    "semver-and-quantity": (
        "device.attributes['gpu.nvidia.com'].cudaComputeCapability.compareTo(semver('8.0.0')) >= 0"
        " && device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0"
    ),
    "bind-has-prefix": (
        "cel.bind(g, device.attributes['gpu.nvidia.com'], "
        "has(g.productName) && g.productName.startsWith('NVIDIA H100'))"
    ),
    "regex": "device.attributes['gpu.nvidia.com'].productName.matches('H1[0-9]{2}')",
    "pci-bus": "device.attributes['resource.kubernetes.io'].pciBusID == '0000:3b:00.0'",
}

ERROR = "error"
# (name, selector, device, expected outcome: True, False or "error")
FEATURES: list[tuple[str, str, str, object]] = [
    ("spec: class gpu", TIMED["driver-and-type"], "gpu", True),
    (
        "spec: class mig",
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'",
        "mig",
        True,
    ),
    (
        "spec: memory >= 40Gi",
        "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0",
        "mig",
        False,
    ),
    (
        "spec: compute capability >= 9.0",
        "device.attributes['gpu.nvidia.com'].cudaComputeCapability.compareTo(semver('9.0.0')) >= 0",
        "gpu",
        True,
    ),
    (
        "spec: driver at least 550",
        "device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('550.0.0'))"
        " || device.attributes['gpu.nvidia.com'].driverVersion == semver('550.0.0')",
        "gpu",
        True,
    ),
    ("spec: product prefix with cel.bind", TIMED["bind-has-prefix"], "gpu", True),
    ("spec: MIG profile", "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'", "mig", True),
    ("spec: PCI bus", TIMED["pci-bus"], "gpu", True),
    (
        "missing attribute is an error",
        "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'",
        "mig",
        ERROR,
    ),
    (
        "absent domain is an empty map",
        "device.attributes['nope.example.com'].size() == 0",
        "gpu",
        True,
    ),
    ("has() guard", "has(device.attributes['gpu.nvidia.com'].profile)", "gpu", False),
    ("in guard", "'profile' in device.attributes['gpu.nvidia.com']", "mig", True),
    (
        "optional field .?",
        "device.attributes['gpu.nvidia.com'].?architecture.orValue('') == 'Hopper'",
        "gpu",
        True,
    ),
    (
        "version == string is an error",
        "device.attributes['gpu.nvidia.com'].driverVersion == '550.54.15'",
        "gpu",
        ERROR,
    ),
    ("int == string is false", "device.attributes['gpu.nvidia.com'].index == '0'", "gpu", False),
    (
        "false && error is false",
        "device.attributes['gpu.nvidia.com'].profile == 'x' && false",
        "gpu",
        False,
    ),
    (
        "error || true is true",
        "device.attributes['gpu.nvidia.com'].profile == 'x' || true",
        "gpu",
        True,
    ),
    (
        "quantity across suffixes",
        "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('81920Mi')) == 0",
        "gpu",
        True,
    ),
    (
        "ordering a quantity does not compile",
        "device.capacity['gpu.nvidia.com'].memory > quantity('40Gi')",
        "gpu",
        ERROR,
    ),
    (
        "non-bool result is an error",
        "device.attributes['gpu.nvidia.com'].productName",
        "gpu",
        ERROR,
    ),
    (
        "strings extension",
        "device.attributes['gpu.nvidia.com'].productName.lowerAscii().contains('h100')",
        "gpu",
        True,
    ),
    ("regex matches", TIMED["regex"], "gpu", True),
    (
        "regex find",
        "device.attributes['gpu.nvidia.com'].productName.find('[0-9]+GB') == '80GB'",
        "gpu",
        True,
    ),
    ("lists library", "[3, 1, 2].min() == 1 && [1, 2].isSorted()", "gpu", True),
    ("sets extension", "sets.contains(['a', 'b'], ['b'])", "gpu", True),
    (
        "two-variable exists",
        "device.attributes['gpu.nvidia.com'].exists(k, v, k == 'type' && v == 'gpu')",
        "gpu",
        True,
    ),
    (
        "int overflow is an error",
        "device.attributes['gpu.nvidia.com'].index + 9223372036854775807 + 1 > 0",
        "gpu",
        ERROR,
    ),
]


# -- engines --------------------------------------------------------------------------------


@dataclass
class Engine:
    """How one engine compiles a selector and evaluates it against a device."""

    name: str
    distribution: str
    compile: Callable[[str], Any]
    evaluate: Callable[[Any, str], Any]
    """(program, device name) -> the selector's value; raises on a CEL error."""


def _semver_text(text: str) -> Semver:
    return Semver.parse(text)


def _compare_texts(a: str, b: str) -> int:
    """compareTo for engines that hold versions and quantities as strings."""
    try:
        return _semver_text(a).compare(_semver_text(b))
    except ValueError:
        return Quantity.parse(a).compare(Quantity.parse(b))


def _ours() -> Engine:
    devices = {
        name: build_cel_device(DRIVER, ATTRIBUTES[name], CAPACITY[name]) for name in ATTRIBUTES
    }
    from dra_driver.cel import selector

    def compile_fresh(expression: str) -> Any:
        # Bypass the memo, so that compile time is measured.
        compiled = selector._compile.__wrapped__(expression)
        if isinstance(compiled, str):
            raise ValueError(compiled)
        return compiled

    def evaluate(program: Any, device: str) -> Any:
        return program.evaluate(devices[device])

    return Engine("dra_driver.cel", "dra-driver", compile_fresh, evaluate)


def _grouped(name: str, convert: Callable[[Any], Any]) -> dict[str, Any]:
    attributes: dict[str, dict[str, Any]] = {}
    for key, value in ATTRIBUTES[name].items():
        domain, _, ident = key.rpartition("/")
        attributes.setdefault(domain or DRIVER, {})[ident] = convert(value)
    capacity = {DRIVER: {k: convert(v) for k, v in CAPACITY[name].items()}}
    return {"driver": DRIVER, "attributes": attributes, "capacity": capacity}


def _as_text(value: Any) -> Any:
    return str(value) if isinstance(value, Semver | Quantity) else value


def _celpy() -> Engine:
    celpy = importlib.import_module("celpy")
    celtypes = importlib.import_module("celpy.celtypes")

    class Version:
        """A Semver the way the Kubernetes library defines it: == only with a Semver."""

        def __init__(self, value: Semver) -> None:
            self.value = value

        def __eq__(self, other: object) -> bool:
            if not isinstance(other, Version):
                raise TypeError("no such overload")
            return self.value == other.value

        __hash__ = None  # type: ignore[assignment]

    class Amount:
        def __init__(self, value: Quantity) -> None:
            self.value = value

        def __eq__(self, other: object) -> bool:
            if not isinstance(other, Amount):
                raise TypeError("no such overload")
            return self.value == other.value

        __hash__ = None  # type: ignore[assignment]

    def wrap(value: Any) -> Any:
        if isinstance(value, Semver):
            return Version(value)
        if isinstance(value, Quantity):
            return Amount(value)
        return value

    def to_cel(value: Any) -> Any:
        if isinstance(value, dict):
            return celtypes.MapType({celtypes.StringType(k): to_cel(v) for k, v in value.items()})
        if isinstance(value, Version | Amount):
            return value
        return celpy.json_to_cel(value)

    devices = {name: {"device": to_cel(_grouped(name, wrap))} for name in ATTRIBUTES}

    def compare(a: Any, b: Any) -> Any:
        return celtypes.IntType(a.value.compare(b.value))

    functions = {
        "semver": lambda s: Version(Semver.parse(str(s))),
        "quantity": lambda s: Amount(Quantity.parse(str(s))),
        "compareTo": compare,
        "isGreaterThan": lambda a, b: celtypes.BoolType(a.value.compare(b.value) > 0),
        "isLessThan": lambda a, b: celtypes.BoolType(a.value.compare(b.value) < 0),
    }
    env = celpy.Environment()

    def compile_(expression: str) -> Any:
        return env.program(env.compile(expression), functions=functions)

    def evaluate(program: Any, device: str) -> Any:
        result = program.evaluate(devices[device])
        if isinstance(result, Exception):
            raise result
        return result

    return Engine("celpy", "cel-python", compile_, evaluate)


def _rust_cel() -> Engine:
    cel = importlib.import_module("cel")
    functions: dict[str, Callable[..., Any]] = {
        "semver": lambda s: str(Semver.parse(s)),
        "quantity": lambda s: str(Quantity.parse(s)) and s,
        "compareTo": _compare_texts,
        "isGreaterThan": lambda a, b: _compare_texts(a, b) > 0,
        "isLessThan": lambda a, b: _compare_texts(a, b) < 0,
    }
    contexts = {
        name: cel.Context({"device": _grouped(name, _as_text)}, functions) for name in ATTRIBUTES
    }

    def evaluate(program: Any, device: str) -> Any:
        return program.execute(contexts[device])

    return Engine("cel", "common-expression-language", cel.compile, evaluate)


def _cel_cpp() -> Engine:
    module = importlib.import_module("cel_expr_python.cel")
    bindings = importlib.import_module("cel_expr_python.ext.ext_bindings")
    optional = importlib.import_module("cel_expr_python.ext.ext_optional")
    strings = importlib.import_module("cel_expr_python.ext.ext_strings")
    t = module.Type

    def overload(name: str, result: Any, params: list[Any], impl: Any, member: bool) -> Any:
        return module.FunctionDecl(
            name, [module.Overload(f"k8s_{name}", result, params, is_member=member, impl=impl)]
        )

    kubernetes = module.CelExtension(
        "kubernetes",
        [
            overload("semver", t.STRING, [t.STRING], lambda s: str(Semver.parse(s)), False),
            overload(
                "quantity", t.STRING, [t.STRING], lambda s: str(Quantity.parse(s)) and s, False
            ),
            overload("compareTo", t.INT, [t.DYN, t.DYN], _compare_texts, True),
            overload(
                "isGreaterThan", t.BOOL, [t.DYN, t.DYN], lambda a, b: _compare_texts(a, b) > 0, True
            ),
            overload(
                "isLessThan", t.BOOL, [t.DYN, t.DYN], lambda a, b: _compare_texts(a, b) < 0, True
            ),
        ],
    )
    env = module.NewEnv(
        variables={"device": t.DYN},
        extensions=[
            bindings.ExtBindings(),
            optional.ExtOptional(),
            strings.ExtStrings(),
            kubernetes,
        ],
    )
    data = {name: {"device": _grouped(name, _as_text)} for name in ATTRIBUTES}

    def evaluate(program: Any, device: str) -> Any:
        value = program.eval(data=data[device])
        if value.type() == t.ERROR:
            raise RuntimeError(str(value.value()))
        return value.value()

    return Engine("cel_expr_python", "cel-expr-python", env.compile, evaluate)


# -- measurement ------------------------------------------------------------------------------


def _per_call_us(call: Callable[[], Any], budget_s: float) -> float:
    """Best of three rounds, each as many calls as fit in ``budget_s / 3``."""
    call()
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    count = max(1, int(budget_s / 3 / once))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - start) / count)
    return round(best * 1e6, 2)


def _bound(function: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: function(*args)


def _outcome(engine: Engine, expression: str, device: str) -> object:
    try:
        program = engine.compile(expression)
        value = engine.evaluate(program, device)
    except Exception:  # any failure of the engine is an error outcome
        return ERROR
    if value is True or value is False:
        return value
    if type(value).__name__ == "BoolType":  # celpy's bool
        return bool(value)
    return ERROR


def measure(engine: Engine, budget_s: float) -> dict[str, Any]:
    timings: dict[str, Any] = {}
    for name, expression in TIMED.items():
        try:
            program = engine.compile(expression)
            engine.evaluate(program, "gpu")
        except Exception as exc:  # reported, not raised
            timings[name] = {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
            continue
        timings[name] = {
            "compile_us": _per_call_us(_bound(engine.compile, expression), budget_s),
            "eval_us": _per_call_us(_bound(engine.evaluate, program, "gpu"), budget_s),
        }
    wrong = [
        name
        for name, expression, device, expected in FEATURES
        if _outcome(engine, expression, device) != expected
    ]
    return {
        "version": importlib.metadata.version(engine.distribution),
        "selectors": timings,
        "features": {
            "passed": len(FEATURES) - len(wrong),
            "total": len(FEATURES),
            "wrong": wrong,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing rounds")
    args = parser.parse_args()
    budget_s = 0.1 if args.quick else 0.6
    engines: dict[str, Any] = {}
    for factory in (_ours, _celpy, _rust_cel, _cel_cpp):
        try:
            engine = factory()
        except ImportError as exc:
            engines[factory.__name__.lstrip("_")] = {"available": False, "reason": str(exc)}
            continue
        engines[engine.name] = measure(engine, budget_s)
    device = build_cel_device(DRIVER, ATTRIBUTES["gpu"], CAPACITY["gpu"])
    build_us = _per_call_us(
        lambda: build_cel_device(DRIVER, ATTRIBUTES["gpu"], CAPACITY["gpu"]), budget_s
    )
    assert isinstance(device, CelDevice)
    assert compile_selector(TIMED["driver-and-type"]).evaluate(device)
    report = {
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "selectors": TIMED,
        "build_cel_device_us": build_us,
        "engines": engines,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
