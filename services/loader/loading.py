"""What the loader does with one poll: the policy behind its two handlers.

A poll of rows batches is written in one transaction, record by record in the ledger
(``services.loader.writer``); messages whose parents are still on their way wait in their
partitions instead (``services.loader.deferral``); a message that is not a batch this topic
carries goes to the dead letter with its reason (never skipped, never looped on); barriers
handled in the poll are acknowledged once what precedes them is written.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.loader.deferral import Position, Split, WaitClock, split
from services.loader.writer import Writer
from shared.failures.policy import Unusable
from shared.platform.kafka import hold
from shared.service import Wiring
from shared.wire.barrier import acknowledge
from shared.wire.batching import read_signed
from shared.wire.messages import Barrier, MappedRecord, QuarantineBatch, QuarantinedRecord, RowsBatch

log = logging.getLogger("schoolmig.loader")


@dataclass(kw_only=True)
class Loading(Wiring):
    """The loader's state (its store, its wait clock) and its steps, one method per handler."""

    writer: Writer

    def __post_init__(self) -> None:
        self.clock = WaitClock(self.settings.parent_wait_s)

    async def rows(self, sources: Sequence[Any], bodies: list[bytes], consumer: Any) -> None:
        """One poll of rows batches: written now, or left to wait for parents on their way."""
        positions = [Position(r.topic, r.partition, r.offset) for r in sources]
        messages = [read_signed(source, body, self.keyring, RowsBatch) for source, body in zip(sources, bodies, strict=True)]
        groups = [m.records() if isinstance(m, RowsBatch) else [] for m in messages]
        plan = await self.plan_poll(positions, groups)
        records = [r for i in plan.now for r in groups[i]]
        refused = {(r.school_id, r.snapshot_id, r.domain, r.index): r for r in await self.writer.load(records)}
        loaded = Counter(
            (r.school_id, r.domain.value) for r in records if (r.school_id, r.snapshot_id, r.domain, r.index) not in refused
        )
        for (school_id, domain), n in loaded.items():
            self.metrics.records_loaded.add(n, {"school_id": school_id, "domain": domain})
        for outcome, n in self.writer.tally.items():
            self.metrics.changes_applied.add(n, {"outcome": outcome})
        self._count_quarantined(list(refused.values()))
        for i in plan.now:
            if isinstance(unusable := messages[i], Unusable):
                await self.letters.reject(sources[i], bodies[i], unusable, counted=True)
        # Committed: every barrier handled now is passed (whatever preceded it is written).
        await acknowledge(self.writer.pool, [m for i in plan.now if isinstance(m := messages[i], Barrier)], "loader")
        if plan.rewind:
            hold(consumer, plan.rewind, self.settings.parent_pause_s)
            log.debug("%d partition(s) wait for parents on their way", len(plan.rewind))

    async def plan_poll(self, positions: list[Position], groups: list[list[MappedRecord]]) -> Split:
        """Which messages wait for parents on their way (``deferral.py``). Judged again with only
        what is written now as given, for at most three rounds: a child whose parent sits in a
        message that waits must wait too, or it would be parked. A longer chain is cut there:
        its last children are parked for their parents (correct, only slower)."""
        now = time.monotonic()
        self.clock.expire(now)
        waiting: set[int] = set()
        plan = split(positions, waiting)
        for _ in range(3):
            view = [groups[i] if i in plan.now else [] for i in range(len(groups))]
            found = await self.writer.parents_on_their_way(view)
            more = {i for i, awaited in found.items() if self.clock.may_wait(awaited, now)} - waiting
            if not more:
                break
            waiting |= more
            plan = split(positions, waiting)
        return plan

    async def quarantine(self, sources: Sequence[Any], bodies: list[bytes]) -> None:
        """One poll of quarantine batches: every entry stored with its reason."""
        messages = [
            read_signed(source, body, self.keyring, QuarantineBatch) for source, body in zip(sources, bodies, strict=True)
        ]
        records = [r for m in messages if isinstance(m, QuarantineBatch) for r in m.entries]
        await self.writer.quarantine(records)
        self._count_quarantined(records)
        for source, body, m in zip(sources, bodies, messages, strict=True):
            if isinstance(m, Unusable):
                await self.letters.reject(source, body, m, counted=True)
        await acknowledge(self.writer.pool, [m for m in messages if isinstance(m, Barrier)], "loader")

    def _count_quarantined(self, records: list[QuarantinedRecord]) -> None:
        for (school_id, domain, stage, reason), n in Counter(
            (r.school_id, r.domain.value, r.stage.value, r.reason) for r in records
        ).items():
            self.metrics.records_quarantined.add(n, {"school_id": school_id, "domain": domain, "stage": stage, "reason": reason})
