"""The transactional outbox: a multi-step effect whose last step is a message is one
transaction plus a publish that can always be done again.

The messages a step announces are written (:func:`enqueue`) in the transaction that
records the step, under the service that writes them (``origin``: its topic prefix and
name, so that deployments sharing a database never send each other's); :func:`drain` publishes
that service's messages, signed, oldest first (one transaction's in the order written),
and deletes them once the broker has them. A process that stops after the commit leaves
them in ``migration.outbox``; the next drain (the service drains every second, any
replica) sends them. At least once: a drain cut short after publishing sends them again,
and every consumer of these messages takes a repeat as the same message.

One drainer per origin at a time (a try-lock: a second one finds it taken and leaves the
rows to the holder's next round). A row the broker refuses for good (a message over its
size limit) is dropped with an error line and a critical count, as a lost event was before
the outbox: it never holds up the rows behind it. A transient failure leaves the row for
the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from shared.failures.policy import classify
from shared.platform.logs import log_limited
from shared.platform.signing import Keyring, body_of, publish
from shared.platform.telemetry import count_error

log = logging.getLogger("schoolmig.outbox")
DRAIN_BATCH = 500


@dataclass(frozen=True)
class Outbound:
    """One message to publish once the transaction that wrote it commits."""

    topic: str
    key: bytes | None
    message: BaseModel


async def enqueue(conn: asyncpg.Connection, messages: Iterable[Outbound], origin: str) -> None:
    """Write ``messages`` in ``conn``'s transaction: published if, and only if, it commits."""
    rows = [(origin, m.topic, m.key, body_of(m.message)) for m in messages]
    if rows:
        await conn.executemany("INSERT INTO migration.outbox (origin, topic, key, body) VALUES ($1, $2, $3, $4)", rows)


async def drain(pool: asyncpg.Pool, broker: KafkaBroker, keyring: Keyring, origin: str) -> int:
    """Publish what ``origin`` left in the outbox, oldest first; return how many were sent.
    Raises the first transient failure, after deleting what did get out."""
    sent = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('schoolmig.outbox:' || $1))", origin):
                return sent  # another drainer is at it: it (or its next round) sends ours too
            rows = await conn.fetch(
                "SELECT id, topic, key, body FROM migration.outbox WHERE origin = $1 ORDER BY id LIMIT $2", origin, DRAIN_BATCH
            )
            if not rows:
                return sent
            settled, trouble = await _publish(rows, broker, keyring)
            await conn.execute("DELETE FROM migration.outbox WHERE id = ANY($1::bigint[])", settled)
        sent += len(settled)
        if trouble is not None:
            raise trouble


async def flush(pool: asyncpg.Pool, broker: KafkaBroker, keyring: Keyring, origin: str) -> None:
    """:func:`drain`, for a step that has committed (and for the rounds): a failure is logged
    and left to the next round, never raised into the step that is already done."""
    try:
        await drain(pool, broker, keyring, origin)
    except Exception as exc:
        log_limited(logging.WARNING, "outbox of %s: %s; the next round sends what is left", origin, type(exc).__name__)


async def _publish(rows: list[asyncpg.Record], broker: KafkaBroker, keyring: Keyring) -> tuple[list[int], Exception | None]:
    """Each row sent (pipelined); the ids that are settled (sent, or refused for good), and the
    first transient failure (its row, and those after it, wait for the next round)."""
    sends = []
    for r in rows:
        try:
            sends.append(await publish(broker, keyring, bytes(r["body"]), r["topic"], key=r["key"], no_confirm=True))
        except Exception as exc:  # refused before it was sent (its size, the broker away)
            sends.append(_failed(exc))
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    settled: list[int] = []
    for r, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, Exception):
            if classify(outcome) == "transient":
                return settled, outcome
            log.error("outbox message %d to %s refused for good (%s): dropped", r["id"], r["topic"], type(outcome).__name__)
            count_error("critical", "outbox: refused for good")
        settled.append(r["id"])
    return settled, None


async def _failed(exc: Exception) -> None:
    raise exc
