"""The cluster agent (``dra-driver controller``): scored placement of claims for gated
pods, explanations as Events, cluster-level pools and DeviceClasses."""
