"""``make demo`` says which stage it is in (e2e/demo.py, :class:`e2e.demo_support.Stages`)."""

from __future__ import annotations

import pytest

from e2e.demo import STAGES
from e2e.demo_support import Stages, Timings


def test_each_stage_is_announced_with_its_number_and_time() -> None:
    said: list[str] = []
    timings = Timings(started=0.0)
    stages = Stages(("build", "start", "stop"), timings, out=said.append)
    stages.enter("build")
    stages.enter("stop")
    assert [line.split(" (at ")[0] for line in said] == ["[1/3] build", "[3/3] stop"]
    assert all(line.endswith(" s)") for line in said)


def test_a_stage_out_of_order_or_unknown_is_refused() -> None:
    stages = Stages(("build", "start"), Timings(), out=lambda _: None)
    stages.enter("start")
    with pytest.raises(ValueError, match="out of order"):
        stages.enter("build")
    with pytest.raises(ValueError, match="not one of build, start"):
        stages.enter("deploy")


def test_the_demo_names_its_stages_from_build_to_teardown() -> None:
    assert STAGES[0] == "building or reusing the cluster binaries"
    assert STAGES[-1] == "tearing down"
    assert len(set(STAGES)) == len(STAGES)
