"""GPU health on this node, from events to taints to the kubelet.

- :mod:`~kubelet_plugin.health.taints`: the health policy, which event raises
  which device taint with which effect (light: the settings parse it);
- :mod:`~kubelet_plugin.health.classification`: each fault's outcome (the XID
  table) and what NVML's recovery action asks for;
- :mod:`~kubelet_plugin.health.monitor`: :class:`HealthMonitor`, events to
  the taints of each GPU (:mod:`~kubelet_plugin.health.gpu_health`), published on
  the ResourceSlices and as health;
- :mod:`~kubelet_plugin.health.recovery`: when taints go (the quiet window, and
  the recovery action NVML reports where it does);
- :mod:`~kubelet_plugin.health.notices`: Node Events and metrics of each GPU
  tainted or recovered;
- :mod:`~kubelet_plugin.health.taint_store`: the taints on disk (``taints.json``),
  the reboot rules, an unreadable file's safe default, admins' clear requests;
- :mod:`~kubelet_plugin.health.node_health`: the monitor put together at start-up;
- :mod:`~kubelet_plugin.health.service`: the kubelet's ``DRAResourceHealth``
  gRPC stream (v1 and v1alpha1) and the broadcaster the monitor feeds it through;
- :mod:`~kubelet_plugin.health.faults`: faults injected into the mock backend
  from files (tests, demos).

Nothing is imported here, so that the settings can read the policy without
pulling gRPC in.
"""
