"""Which messages of a poll wait for their parents: order inside a partition is kept, and no
message waits past the budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.loader.deferral import Position, WaitClock, split


@st.composite
def polls(draw: st.DrawFn) -> tuple[list[Position], set[int]]:
    """A poll as Kafka gives it: per partition, increasing offsets; partitions interleaved."""
    positions: list[Position] = []
    next_offset: dict[tuple[str, int], int] = {}
    for _ in range(draw(st.integers(0, 25))):
        tp = (draw(st.sampled_from(["rows.students", "rows.grades"])), draw(st.integers(0, 2)))
        offset = next_offset.get(tp, draw(st.integers(0, 5)))
        next_offset[tp] = offset + draw(st.integers(1, 3))
        positions.append(Position(tp[0], tp[1], offset))
    waiting = draw(st.sets(st.integers(0, max(len(positions) - 1, 0)))) if positions else set()
    return positions, waiting


@given(polls())
def test_what_waits_is_delivered_again_and_nothing_behind_it_is_handled(poll: tuple[list[Position], set[int]]) -> None:
    positions, waiting = poll
    plan = split(positions, waiting)
    assert not waiting & set(plan.now)
    for i, p in enumerate(positions):
        if p.tp in plan.rewind:
            handled = i in plan.now
            assert handled == (p.offset < plan.rewind[p.tp])  # before the first waiting one: handled; from it: again
        else:
            assert i in plan.now
    for tp, offset in plan.rewind.items():  # the rewind is to a waiting message, the earliest of its partition
        assert offset == min(positions[i].offset for i in waiting if positions[i].tp == tp)


def test_a_message_waits_at_most_the_budget_and_is_forgotten_once_handled() -> None:
    clock = WaitClock(budget_s=10)
    p = Position("rows.grades", 0, 7)
    assert clock.may_wait(p, now=100.0)
    assert clock.may_wait(p, now=109.0)
    assert not clock.may_wait(p, now=110.5)  # waited long enough: parked for instead
    clock.forget([p], now=111.0)
    assert clock.may_wait(p, now=200.0)  # a fresh wait (e.g. the same offset after a re-drive)
    clock.forget([], now=221.0)  # not handled, but older than twice the budget: dropped
    assert clock.first == {}
