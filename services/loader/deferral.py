"""Which messages of a poll wait for their parents instead of being parked. Pure.

Each domain has its own topic, so a child's batch often reaches the loader before its
parent's; parking the child and writing it again later costs three times a plain write
(measured). When the parent's domain of the same snapshot is still on its way, the loader
instead leaves the child's message where it is: it writes the rest of the poll, moves its
position in that partition back to the message (so the commit never passes it) and pauses
the partition for a moment. The message is delivered again when the parents are likely in.

Order inside a partition is kept: once one message waits, every later message of that
partition waits with it (and so does a barrier behind it, which is acknowledged only once
what precedes it is written). Waiting is bounded per parent awaited, (school, snapshot,
domain): once it has been waited for ``budget_s`` in all, its children are handled like
any others, their missing parents parked for.
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


Awaited = tuple[str, str, str]  # (school, snapshot, parent domain)


@dataclass
class WaitClock:
    """When waiting for each (school, snapshot, parent domain) began, so that no parent is
    waited for longer than the budget in all: once it has been, its children are parked for
    without waiting, however many batches (or partitions) they fill, and whatever keeps
    that domain from being accounted for (a newer snapshot that took its records over, say).

    In memory on purpose: it only bounds an optimisation. After a restart a parent may be
    waited for once more, never longer than the budget.
    """

    budget_s: float
    keep_s: float = 600.0
    """How long a wait is remembered (a wait that began this long ago may begin again)."""
    began: dict[Awaited, float] = field(default_factory=dict)

    def may_wait(self, awaited: Iterable[Awaited], now: float) -> bool:
        """Whether a message awaiting these parents may wait (again)."""
        starts = [self.began.setdefault(key, now) for key in awaited]
        return any(now - started < self.budget_s for started in starts)

    def expire(self, now: float) -> None:
        self.began = {k: t for k, t in self.began.items() if now - t < max(self.keep_s, 2 * self.budget_s)}
