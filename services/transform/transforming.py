"""What transform does with one poll of raw batches: the policy behind its handler.

Each raw batch maps record by record (``services.transform.records.transform_batch``) into
one rows message and, where records cannot be migrated, one quarantine message (more only
when a bound of ``shared.wire.batching`` is reached). A barrier goes on once everything
before it is published. The poll's offsets are committed only after every output is
acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from services.transform.records import transform_batch
from shared.catalog.domains import Domain
from shared.failures.policy import Unusable
from shared.platform.signing import publish
from shared.platform.topics import batch_key
from shared.service import Wiring
from shared.wire.barrier import forward, partition_counts
from shared.wire.batching import header, pack, quarantine_header, read_signed
from shared.wire.messages import Barrier, RawBatch


class Transforming(Wiring):
    """Transform's state (where it publishes, its limits) and its steps."""

    async def raw(self, sources: Sequence[Any], bodies: list[bytes]) -> None:
        """One poll: each batch's outputs published (pipelined), barriers passed on in order."""
        pending: list[Any] = []
        for source, body in zip(sources, bodies, strict=True):
            batch = read_signed(source, body, self.keyring, RawBatch)
            if isinstance(batch, Barrier):  # everything before it is published first, then the barrier goes on
                await asyncio.gather(*pending)
                pending.clear()
                await self.forward_barrier(batch)
            elif isinstance(batch, Unusable):  # not what this topic carries: kept with the reason, never looped on
                await self.letters.reject(source, body, batch, counted=True)
            else:
                assert isinstance(batch, RawBatch)
                try:
                    produced = self.outputs(batch)
                except Exception as exc:  # pure code, so this message's own fault: the others go on
                    await self.letters.isolate(source, body, exc, "transform", pure=True)
                    continue
                pending += [
                    await publish(self.broker, self.keyring, out, topic, key=key, no_confirm=True) for out, topic, key in produced
                ]
        await asyncio.gather(*pending)

    def outputs(self, batch: RawBatch) -> list[tuple[bytes, str, bytes]]:
        """The messages one raw batch becomes: (body, topic, key)."""
        done = transform_batch(batch)
        key = batch_key(batch.school_id, batch.domain)
        limits = {"max_records": self.settings.batch_records, "max_bytes": self.settings.batch_bytes}
        rows_head = header("rows.batch", batch.school_id, batch.snapshot_id, batch.domain, batch.source_ts)
        out = [(body, self.topics.rows(batch.domain), key) for body, _ in pack(rows_head, done.mapped, **limits)]
        quarantine_head = quarantine_header(batch.school_id)
        out += [(body, self.topics.quarantine, key) for body, _ in pack(quarantine_head, done.quarantined, **limits)]
        if done.mapped:  # counted where they are stored (loaded, or quarantined by the loader)
            self.metrics.records_mapped.add(len(done.mapped), {"school_id": batch.school_id, "domain": batch.domain.value})
        return out

    async def forward_barrier(self, barrier: Barrier) -> None:
        domain = next(d for d in Domain if self.topics.raw(d) == barrier.topic)
        targets = [self.topics.rows(domain), self.topics.quarantine]
        assert self.settings.kafka_bootstrap_servers
        counts = await partition_counts(self.settings.kafka_bootstrap_servers, targets)
        await forward(self.broker, self.keyring, barrier, targets, counts)
