# Every target creates the virtual environment it needs; nothing has to be installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test lint unit demo demo-offline bench soak clean e2e-kind

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

# The project's test command (README, .ci/run): static checks, then every test tier.
test: lint
	$(PY) -m pytest -q

# The driver's main job on the local cluster (root): mock GPUs, the controller, the demo pods.
# DEMO_MACHINE=dgx-h100 (pairs-4xA100, pcie-4xL40S, rack-4xH100): that mock machine, topology scene.
demo: $(STAMP)
	$(PY) -m e2e.demo $(if $(DEMO_MACHINE),--machine=$(DEMO_MACHINE))

# The same examples through the offline allocator, every policy; no cluster, about a second.
demo-offline: $(STAMP)
	$(VENV)/bin/dra-driver demo

# bench/goalloc: the kube-scheduler's allocator as a Go program, the peer of bench/command_speed.py
# (a separate module; built from the Go module cache, its go.sum pins every module).
GOALLOC := bench/goalloc/goalloc

$(GOALLOC): bench/goalloc/main.go bench/goalloc/go.mod bench/goalloc/go.sum
	cd bench/goalloc && GOFLAGS="$${GOFLAGS:-} -mod=readonly" go build -trimpath -o goalloc .

bench: $(STAMP) $(GOALLOC)
	$(PY) bench/allocator_bench.py
	$(PY) bench/cel_engines.py
	$(PY) bench/command_speed.py
	$(PY) bench/decision_bench.py

# kind for real, as root (e2e/kind/README.md): Docker's engine from Debian's packages, kind from
# its Go module, a node image built here without any registry, the chart with mock GPUs, the demo
# and the cluster suite; the cluster is deleted and the dockerd it started is stopped at the end.
# Not part of `make test`: a cold run builds images for many minutes. KIND_NODE_IMAGE=kindest/...
# uses a published node image instead (a machine with internet).
e2e-kind: $(STAMP)
	KIND_NODE_IMAGE=$(or $(KIND_NODE_IMAGE),local) e2e/kind/run.sh; status=$$?; e2e/kind/engine.sh down; exit $$status

# Seeded random kills of the driver for longer (docs/operations.md): SOAK rounds, a new seed unless SEED.
soak: $(STAMP)
	DRA_DRIVER_FAULT_SOAK=$(or $(SOAK),5000) $(if $(SEED),DRA_DRIVER_FAULT_SEED=$(SEED)) $(PY) -m pytest tests/component/test_driver_fault_kills.py -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
