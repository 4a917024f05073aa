"""Kafka wiring shared by the services and the CLI: broker factory and topic creation.

Nothing here depends on the embedded broker: it is plain Kafka protocol (no idempotent
producer or transactions, which not every Kafka-compatible broker supports; at-least-once
delivery with idempotent consumers is the design).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy

from shared.messages import MAX_MESSAGE_BYTES
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)


class BackoffOnError(BaseMiddleware):
    """Wait before letting a failed message be redelivered.

    Handlers raise only on what they could not handle (bad data is quarantined, not
    raised); the consumer then rewinds (``NACK_ON_ERROR``) so nothing is skipped. Without
    a pause that rewind is a hot loop; with it, a broken dependency is retried at most
    every ``MAX_BACKOFF_S`` and the logs stay readable.
    """

    MAX_BACKOFF_S = 30.0
    _consecutive_failures = 0

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        try:
            result = await call_next(msg)
        except Exception as exc:
            BackoffOnError._consecutive_failures += 1
            delay = min(self.MAX_BACKOFF_S, 0.5 * 2 ** (BackoffOnError._consecutive_failures - 1))
            log.error("handler failed (%s); redelivering in %.1fs", type(exc).__name__, delay, exc_info=exc)
            await asyncio.sleep(delay)
            raise
        BackoffOnError._consecutive_failures = 0
        return result


def make_broker(settings: Settings, *, client_id: str) -> KafkaBroker:
    if not settings.kafka_bootstrap_servers:
        raise RuntimeError(
            "KAFKA_BOOTSTRAP_SERVERS is not set; run services through `schoolmig up`, "
            "which starts an embedded broker, or point them at a Kafka cluster."
        )
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"schoolmig-{client_id}",
        graceful_timeout=settings.graceful_timeout_s,
        acks="all",
        enable_idempotence=False,
        compression_type=None if settings.compression == "none" else settings.compression,
        max_request_size=MAX_MESSAGE_BYTES,
        middlewares=[BackoffOnError],
        log_level=logging.DEBUG,  # FastStream's per-message "Received/Processed" lines
    )


async def raw_bodies(msg: KafkaMessage) -> list[bytes] | bytes:
    """The bytes as sent (a batch subscriber: each message's): the handler decodes them with
    the codec it chose (``shared.batching``), whatever content-type a producer set."""
    body = msg.body
    return [bytes(b) for b in body] if isinstance(body, list) else bytes(body)


def consumer_options(settings: Settings, group: str, *, batch: bool = False) -> dict[str, Any]:
    """How every schoolmig consumer reads: its own group, from the beginning when the group
    is new, committing only after the handler succeeded (an exception rewinds instead)."""
    options: dict[str, Any] = {
        "group_id": group,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
    }
    if batch:
        options |= {
            "batch": True, "max_records": settings.batch_size, "batch_timeout_ms": settings.batch_timeout_ms,
            # A few messages per partition per fetch: a poll then holds every domain's next
            # batches side by side (parents, sent first, with their children) instead of a
            # long run of one partition, which made the loader park most children.
            "max_partition_fetch_bytes": settings.fetch_partition_bytes,
        }  # fmt: skip
    return options


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic the pipeline uses that does not exist yet; return those created."""
    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    wanted = topics.all()
    compacted = {topics.control: {"cleanup.policy": "compact"}}  # the latest mode per school is what counts
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, settings.partitions, settings.replication_factor, topic_configs=compacted.get(t, {}))
                     for t in missing]  # fmt: skip
                )
            except TopicAlreadyExistsError:  # a concurrent creator won the race
                pass
            log.info("created %d topics", len(missing))
        return missing
    finally:
        await admin.close()
