"""Which messages of a poll wait for their parents instead of being parked. Pure.

Each domain has its own topic, so a child's batch often reaches the loader before its
parent's; parking the child and writing it again later costs three times a plain write
(measured). When the parent's domain of the same snapshot is still on its way, the loader
instead leaves the child's message where it is: it writes the rest of the poll, moves its
position in that partition back to the message (so the commit never passes it) and pauses
the partition for a moment. The message is delivered again when the parents are likely in.

Order inside a partition is kept: once one message waits, every later message of that
partition waits with it (and so does a barrier behind it, which is acknowledged only once
what precedes it is written). Waiting is bounded: a message that has waited
``budget_s`` is handled like any other, its missing parents parked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(frozen=True)
class Split:
    now: list[int]
    """Indexes of the messages to handle in this poll."""
    rewind: dict[TopicPartition, int]
    """Per partition, the offset to deliver again from."""


def split(positions: Sequence[Position], waiting: Iterable[int]) -> Split:
    """Handle everything but the waiting messages and whatever follows one in its partition."""
    rewind: dict[TopicPartition, int] = {}
    for i in waiting:
        p = positions[i]
        rewind[p.tp] = min(rewind.get(p.tp, p.offset), p.offset)
    now = [i for i, p in enumerate(positions) if p.tp not in rewind or p.offset < rewind[p.tp]]
    return Split(now=now, rewind=rewind)


@dataclass
class WaitClock:
    """When each waiting message first waited, so that no message waits past the budget.

    In memory on purpose: it only bounds an optimisation. After a restart a message may wait
    once more, and the wait still ends when its parents' domain is accounted for.
    """

    budget_s: float
    first: dict[tuple[str, int, int], float] = field(default_factory=dict)

    def may_wait(self, position: Position, now: float) -> bool:
        key = (position.topic, position.partition, position.offset)
        started = self.first.setdefault(key, now)
        return now - started < self.budget_s

    def forget(self, handled: Iterable[Position], now: float) -> None:
        """Drop what was handled, and anything older than twice the budget (a rebalance took it)."""
        done = {(p.topic, p.partition, p.offset) for p in handled}
        self.first = {k: t for k, t in self.first.items() if k not in done and now - t < 2 * self.budget_s}
