"""What a node's GPUs are: the device model every backend fills, and the mock backend.

:mod:`.model` holds the types, :mod:`.normalize` maps NVML's raw values onto them, and
:mod:`.mock` with :mod:`.profiles` makes deterministic fake GPUs (NVML is the kubelet plugin's).
"""
