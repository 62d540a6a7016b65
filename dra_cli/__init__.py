"""The ``dra-driver`` and ``kubectl-dra`` command lines: the program's composition root.

Each subcommand wires the core (offline tools) or one agent (``kubelet-plugin``,
``controller``); nothing imports this package. Agents are imported inside the functions
that run them, so the offline commands load no gRPC, Kubernetes client or NVML.
"""
