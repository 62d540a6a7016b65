"""The cluster agent (``dra-driver controller``): places the claims of gated pods under a
policy (``placement/``, fed by the watches' ``cache/``), explains unallocatable claims as
Events, publishes cluster-level pools and DeviceClasses, and elects a leader."""
