"""The placement policies' names, apart from the allocator that implements them
(:mod:`dra_driver.allocator.policies`), so that building the command line's flags loads no
allocator."""

from __future__ import annotations

from typing import Final

__all__ = ["FIRST_FIT", "POLICIES"]

FIRST_FIT: Final = "first-fit"
#: Every policy name, ``first-fit`` (upstream behaviour) first.
POLICIES: Final = (FIRST_FIT, "binpack", "spread", "most-capable", "topology")
