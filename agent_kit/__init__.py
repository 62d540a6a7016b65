"""The agents' toolkit: what the kubelet plugin and the controller share.

Settings and flags (:mod:`agent_kit.flags`), logging (:mod:`agent_kit.logs`), the one
Kubernetes API client and its error tree (:mod:`agent_kit.kube`). It sits above the pure
core (``dra_driver``) and below the two agents; it imports neither agent.
"""
