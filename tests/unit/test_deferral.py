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


def test_a_parent_is_waited_for_at_most_the_budget_in_all_however_many_batches_wait() -> None:
    clock = WaitClock(budget_s=10, keep_s=100)
    students = ("school-1", "snap-1", "students")
    classes = ("school-1", "snap-1", "classes")
    assert clock.may_wait({students}, now=100.0)
    assert clock.may_wait({students}, now=109.0)  # the next batch waiting for the same parent
    assert not clock.may_wait({students}, now=110.5)  # the budget is spent: its children park now
    assert clock.may_wait({students, classes}, now=111.0)  # a parent not waited for yet: may wait
    assert not clock.may_wait({students, classes}, now=121.5)
    clock.expire(now=150.0)
    assert set(clock.began) == {students, classes}  # remembered, so no new 10 s wait for either
    clock.expire(now=201.0)
    assert set(clock.began) == {classes}
    assert clock.may_wait({students}, now=202.0)  # forgotten: a new wait may begin
