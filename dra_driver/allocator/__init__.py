"""The kube-scheduler's structured allocator, with placement policies and explanations.

Which devices of which node a pending claim gets, decided against a :class:`Snapshot`
of slices, classes, nodes and the devices in use. Public surface::

    snap = Snapshot.build(slices=..., classes=..., claims=[allocated claims], nodes=[...],
                          taint_rules=[DeviceTaintRules])   # their taints join the slices'
    alloc = allocate(snap, pending_claims, node=None, policy="first-fit")
    alloc.node, alloc.results          # results aligned with pending_claims
    snap.add_allocated(claim)          # the claim now holds its devices
    explain(snap, pending_claims).render_table()

Semantics are spec/allocator.md (Kubernetes 1.36, consumable capacity and
binding conditions on). ``first-fit`` is exactly upstream; the other
:data:`POLICIES` choose among valid allocations (see :mod:`.policies`).
"""

from dra_driver.allocator.allocation import Allocation, allocate
from dra_driver.allocator.explanation import Explanation, explain
from dra_driver.allocator.snapshot import Snapshot
from dra_driver.policy_names import POLICIES

__all__ = ["POLICIES", "Allocation", "Explanation", "Snapshot", "allocate", "explain"]
