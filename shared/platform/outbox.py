"""The transactional outbox: a multi-step effect whose last step is a message is one
transaction plus a publish that can always be done again.

The messages a step announces are written (:func:`enqueue`) in the transaction that
records the step; :func:`drain` publishes them, signed, in the order they were written,
and deletes them once the broker has them. A process that stops after the commit leaves
them in ``migration.outbox``; the next drain (every service that writes one drains every
second, any replica) sends them. At least once: a drain cut short after publishing sends
them again (every consumer of them is idempotent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from shared.platform.signing import Keyring, body_of, publish

#: One drainer at a time (an advisory lock), so messages leave in the order they were written.
_DRAIN_LOCK = 0x5C400_2
DRAIN_BATCH = 500


@dataclass(frozen=True)
class Outbound:
    """One message to publish once the transaction that wrote it commits."""

    topic: str
    key: bytes | None
    message: BaseModel


async def enqueue(conn: asyncpg.Connection, messages: Iterable[Outbound]) -> None:
    """Write ``messages`` in ``conn``'s transaction: published if, and only if, it commits."""
    rows = [(m.topic, m.key, body_of(m.message)) for m in messages]
    if rows:
        await conn.executemany("INSERT INTO migration.outbox (topic, key, body) VALUES ($1, $2, $3)", rows)


async def drain(pool: asyncpg.Pool, broker: KafkaBroker, keyring: Keyring) -> int:
    """Publish what the outbox holds, oldest first; return how many were sent."""
    sent = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _DRAIN_LOCK)
            rows = await conn.fetch("SELECT id, topic, key, body FROM migration.outbox ORDER BY id LIMIT $1", DRAIN_BATCH)
            if not rows:
                return sent
            pending = [await publish(broker, keyring, bytes(r["body"]), r["topic"], key=r["key"], no_confirm=True) for r in rows]
            await asyncio.gather(*pending)  # the broker has them all before they are deleted
            await conn.execute("DELETE FROM migration.outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        sent += len(rows)
