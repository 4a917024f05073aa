"""The transactional outbox (``shared.platform.outbox``) on a real PostgreSQL and broker: a
message is published if, and only if, the transaction that wrote it commits; one left
behind by a process that stopped after the commit is sent by the next drain, in order; one
the broker refuses for good never holds up those behind it; a service drains only its own."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from pydantic import BaseModel

from shared.platform.embedded import EmbeddedKafka
from shared.platform.kafka import make_broker
from shared.platform.outbox import Outbound, drain, enqueue
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.wire.messages import ValidationRequested
from tests.integration.conftest import read_topic


class Oversized(BaseModel):
    blob: str


def requested(topic: str, n: int) -> Outbound:
    return Outbound(topic, b"s", ValidationRequested(run_id=f"run-{n}", school_id="s", snapshot_id="n"))


async def test_only_committed_messages_leave_and_a_stopped_writers_are_sent_by_the_next_drain_in_order(
    kafka: EmbeddedKafka, settings: Settings, pool: asyncpg.Pool
) -> None:
    topic = f"it-outbox-{uuid.uuid4().hex[:8]}"
    keyring = Keyring.for_service(settings)
    # A step that failed: its transaction rolled back, so its message must never leave.
    try:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [requested(topic, 0)], "test")
            raise RuntimeError("the step failed after writing its message")
    except RuntimeError:
        pass
    # A step that committed, and whose process stopped before publishing (no drain here); in
    # the middle, a message the broker refuses for good (over its size limit); and another
    # service's message, which this one does not send.
    too_large = Outbound(topic, b"s", Oversized(blob="x" * 1_200_000))
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, [requested(topic, 1), too_large, requested(topic, 2), requested(topic, 3)], "test")
        await enqueue(conn, [requested(topic, 4)], "another service")
    assert await pool.fetchval("SELECT count(*) FROM migration.outbox WHERE topic = $1", topic) == 5

    broker = make_broker(settings, client_id="outbox-test")  # another process: the next drain, any replica's
    await broker.connect()
    try:
        await asyncio.gather(drain(pool, broker, keyring, "test"), drain(pool, broker, keyring, "test"))  # two replicas
        assert await drain(pool, broker, keyring, "test") == 0  # nothing left: sends nothing again
    finally:
        await broker.stop()
    assert await pool.fetch("SELECT origin FROM migration.outbox WHERE topic = $1", topic) == [("another service",)]
    await pool.execute("DELETE FROM migration.outbox WHERE topic = $1", topic)
    sent = await read_topic(kafka.bootstrap_servers, topic, want=10, group=f"it-outbox-{uuid.uuid4().hex[:6]}", timeout_s=4)
    assert [m["run_id"] for m in sent] == ["run-1", "run-2", "run-3"]  # once each, in the order written
