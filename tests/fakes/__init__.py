"""Every fake of the project, in one place: stand-ins for the API server, NVML and the
node driver that the tests (and the benchmarks) inject through the agents' ports.

Nothing in a product package imports this package. The mock GPU backend is not here: it
is a product feature (``dra_driver.discovery.mock``), how users try the driver without GPUs.
"""
