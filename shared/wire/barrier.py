"""Sync barriers: proof that everything sent before a moment has been handled.

The coordinator sends a :class:`~shared.wire.messages.Barrier` to every partition of the ingest
topic. Each stage, on meeting one in a partition, has finished everything before it there
(handlers work in order and publish before they commit), and forwards a copy to every
partition it writes to: ingest to every raw topic and the quarantine topic, transform from
``raw.<domain>`` to ``rows.<domain>`` and quarantine. The loader acknowledges each copy in
PostgreSQL once what came before it is committed. When every path has been acknowledged
(:func:`expected_acks`), nothing published before the barrier is still in flight: no
sleeps, no guessing from lag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from shared.catalog.domains import ALL_DOMAINS
from shared.platform.signing import Keyring, publish
from shared.platform.topics import Topics
from shared.wire.messages import Barrier

_partitions: dict[str, int] = {}


async def partition_counts(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """Partitions per topic, from the cluster's metadata (cached: they only ever grow, and
    a barrier sent meanwhile then just times out, failing safe)."""
    wanted = [t for t in topics if t not in _partitions]
    if wanted:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for topic in wanted:
                found = await producer.partitions_for(topic)
                _partitions[topic] = len(found)
        finally:
            await producer.stop()
    return {t: _partitions[t] for t in topics}


def expected_acks(topics: Topics, counts: Mapping[str, int]) -> int:
    """How many copies the loader acknowledges for one barrier sent to every ingest partition."""
    quarantine = counts[topics.quarantine]
    per_ingest_partition = quarantine + sum(counts[topics.raw(d)] * (counts[topics.rows(d)] + quarantine) for d in ALL_DOMAINS)
    return counts[topics.ingest] * per_ingest_partition


async def forward(
    broker: KafkaBroker, keyring: Keyring, barrier: Barrier, targets: Iterable[str], counts: Mapping[str, int]
) -> None:
    """A copy of ``barrier`` to every partition of every target topic, noting where it came from."""
    origin = f"{barrier.origin}>{barrier.topic}:{barrier.partition}"
    for topic in targets:
        for partition in range(counts[topic]):
            copy = barrier.model_copy(update={"topic": topic, "partition": partition, "origin": origin})
            await publish(broker, keyring, copy, topic, partition=partition, key=barrier.school_id.encode())


async def acknowledge(pool: asyncpg.Pool, barriers: Iterable[Barrier], acked_by: str) -> None:
    rows = [(b.barrier_id, b.topic, b.origin, b.partition, acked_by) for b in barriers]
    if rows:
        await pool.executemany(
            "INSERT INTO migration.barrier_acks (barrier_id, topic, origin, partition, acked_by)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            rows,
        )
