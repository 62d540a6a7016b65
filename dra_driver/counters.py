"""The shared counters of a partitionable GPU (KEP 4815): its totals, each MIG placement's share.

Per GPU model, each counter (SMs, copy engines, decoders, encoders, JPEG and OFA
engines, memory) is the most any layout of non-overlapping MIG placements uses
together, never less than the GPU's memory for ``memory``, plus one
``memory-slice-<i>`` counter per memory slice. A placement consumes its
profile's resources and its memory slices; the full GPU consumes everything.
So the scheduler never hands out a full GPU and an overlapping MIG device together,
and never blocks a layout the hardware allows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Final

from dra_driver.discovery.model import Gpu, MigProfile

#: (capacity name, counter name, MigProfile field) of every per-profile resource.
MIG_RESOURCES: Final[tuple[tuple[str, str, Callable[[MigProfile], int]], ...]] = (
    ("multiprocessors", "multiprocessors", lambda p: p.multiprocessors),
    ("copyEngines", "copy-engines", lambda p: p.copy_engines),
    ("decoders", "decoders", lambda p: p.decoders),
    ("encoders", "encoders", lambda p: p.encoders),
    ("jpegEngines", "jpeg-engines", lambda p: p.jpeg_engines),
    ("ofaEngines", "ofa-engines", lambda p: p.ofa_engines),
    ("memory", "memory", lambda p: p.memory_bytes),
)


def _max_disjoint(placements: tuple[tuple[int, int], ...]) -> int:
    """How many of these placements fit side by side (greedy by end: optimal)."""
    count, free_from = 0, 0
    for start, size in sorted(placements, key=lambda p: p[0] + p[1]):
        if start >= free_from:
            count, free_from = count + 1, start + size
    return count


def _layout_maximum(
    profiles: tuple[MigProfile, ...], end: int, value: Callable[[MigProfile], int]
) -> int:
    """The most of ``value`` any layout of non-overlapping placements uses together.

    Weighted interval scheduling over the memory slices, honouring each
    profile's instance count (one ``+me`` instance per GPU). The counters built
    from it never block a layout the hardware allows, and do not overstate
    what the GPU has (an A100 has one OFA engine, not one per ``+me`` placement).
    """
    starting_at: dict[int, list[tuple[int, int]]] = {}
    for number, profile in enumerate(profiles):
        for start, size in profile.placements:
            starting_at.setdefault(start, []).append((number, size))
    # Only instance counts below what the slices allow anyway can bind; the
    # others stay out of the search state, which keeps it tiny.
    limited = [
        number
        for number, p in enumerate(profiles)
        if p.instance_count is not None and p.instance_count < _max_disjoint(p.placements)
    ]
    slot = {number: i for i, number in enumerate(limited)}
    initial = tuple(profiles[number].instance_count or 0 for number in limited)
    memo: dict[tuple[int, tuple[int, ...]], int] = {}

    def best(position: int, remaining: tuple[int, ...]) -> int:
        if position >= end:
            return 0
        key = (position, remaining)
        if key not in memo:
            result = best(position + 1, remaining)
            for number, size in starting_at.get(position, ()):
                left = remaining
                if number in slot:
                    i = slot[number]
                    if remaining[i] == 0:
                        continue
                    left = (*remaining[:i], remaining[i] - 1, *remaining[i + 1 :])
                result = max(result, value(profiles[number]) + best(position + size, left))
            memo[key] = result
        return memo[key]

    return best(0, initial)


@cache
def _layout_totals(profiles: tuple[MigProfile, ...], memory_slices: int) -> dict[str, int]:
    """Per counter, the most any MIG layout of this GPU model uses; computed once per model."""
    end = max([memory_slices] + [start + size for p in profiles for start, size in p.placements])
    return {counter: _layout_maximum(profiles, end, value) for _, counter, value in MIG_RESOURCES}


def counter_values(gpu: Gpu) -> dict[str, int]:
    """The counters of a partitionable GPU; zero-valued ones are left out."""
    counters: dict[str, int] = {}
    for counter, layout_total in _layout_totals(gpu.mig_profiles, gpu.memory_slices).items():
        total = layout_total
        if counter == "memory" and gpu.memory_bytes is not None:
            total = max(total, gpu.memory_bytes)
        if total > 0:
            counters[counter] = total
    for i in range(gpu.memory_slices):
        counters[f"memory-slice-{i}"] = 1
    return counters


def placement_consumption(profile: MigProfile, placement: tuple[int, int]) -> dict[str, int]:
    start, size = placement
    used = {counter: value(profile) for _, counter, value in MIG_RESOURCES if value(profile) > 0}
    for i in range(start, start + size):
        used[f"memory-slice-{i}"] = 1
    return used


def is_partitionable(gpu: Gpu) -> bool:
    return gpu.mig_capable and not gpu.mig_enabled and bool(gpu.mig_profiles)
