"""The node agent (``dra-driver kubelet-plugin``): GPU discovery (``nvml/`` or mock GPUs),
the node's ResourceSlices (``publisher``), the kubelet's gRPC services, crash-safe
prepare/unprepare writing CDI specs (``driver/``), and GPU health (``health/``)."""
