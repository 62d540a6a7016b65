"""MPS control daemons for GPUs shared with MPS: one per GPU, started at prepare, stopped
when its last claim is unprepared, adopted across plugin restarts and restarted when they die.

:mod:`.daemons` holds the design (why one daemon per GPU, what limits are
enforced and when); :mod:`.daemon` runs one daemon process; :mod:`.users` checks at
prepare that the claims on one GPU run as one user ID.
"""

from kubelet_plugin.mps.daemon import MpsDaemon, MpsDaemonError
from kubelet_plugin.mps.daemons import MPS_CONTROL_BINARY, MpsCeiling, MpsDaemons

__all__ = [
    "MPS_CONTROL_BINARY",
    "MpsCeiling",
    "MpsDaemon",
    "MpsDaemonError",
    "MpsDaemons",
]
