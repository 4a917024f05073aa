"""Dead letters: a message a consumer cannot use, kept whole with its reason, so that the
partition moves on and nothing is dropped without a trace. Every consumer sends its own
(ingest for the public door, transform and loader for what is not a batch they read, and
``shared.platform.kafka.Guard`` for a message a handler failed on for good).

A dead letter must fit in one Kafka message, and base64 adds a third: a payload larger than
:data:`MAX_PAYLOAD_BYTES` is stored in PostgreSQL (``migration.dead_letter_payloads``, by
the message's topic, partition and offset) and the dead letter carries a reference to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Protocol

import asyncpg
from faststream.kafka import KafkaBroker

from shared.platform.db import with_retries
from shared.platform.settings import Settings
from shared.platform.signing import Keyring, publish
from shared.platform.telemetry import count_dead_letter, count_error, count_refused
from shared.wire import chunks
from shared.wire.batching import Unusable
from shared.wire.messages import DeadLetter, FieldError

log = logging.getLogger("schoolmig.deadletter")

MAX_PAYLOAD_BYTES = 512 * 1024  # base64: ~683 KiB, under the 1 MiB a message may have
MAX_KEY_BYTES = 256  # a client's key travels with its dead letter only if it is a sane size


class Located(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None


class DeadLetters:
    """Where one process sends its dead letters; the database only when a payload is large."""

    def __init__(self, broker: KafkaBroker, topic: str, settings: Settings, service: str = "") -> None:
        self.broker = broker
        self.topic = topic
        self.settings = settings
        self.keyring = Keyring.for_service(settings)
        self.service = service
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def send(
        self,
        source: Located | Any,
        body: bytes,
        reason: str,
        detail: str,
        *,
        error_class: str | None = None,
        school_id: str | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        """Publish ``body`` (read at ``source``) to the dead-letter topic with the reason, the
        stage (this service), the school it names and the rules it broke; under the
        correlation id it came with."""
        ref = None
        if len(body) > MAX_PAYLOAD_BYTES:
            ref = await self._store(source, body)
            body = b""
        key = (
            source.key
            if source.key is None or len(source.key) <= MAX_KEY_BYTES
            else hashlib.sha256(source.key).hexdigest().encode()
        )
        await publish(
            self.broker,
            self.keyring,
            DeadLetter(
                reason=reason,
                message=detail,
                topic=source.topic,
                partition=source.partition,
                offset=source.offset,
                payload_b64=chunks.encode(body),
                payload_ref=ref,
                error_class=error_class,
                stage=self.service or None,
                school_id=school_id,
                correlation_id=(correlation := correlation_of(source)),
                errors=errors or [],
            ),
            self.topic,
            key=key,  # one sender's dead letters stay in order on one partition
            correlation_id=correlation,
        )
        count_dead_letter(self.service, reason)
        log.warning("dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, reason)

    async def _store(self, source: Located, body: bytes) -> str:
        pool = await self._connect()
        await with_retries(
            lambda: pool.execute(
                """
                INSERT INTO migration.dead_letter_payloads (topic, partition, "offset", size_bytes, payload)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
                """,
                source.topic,
                source.partition,
                source.offset,
                len(body),
                body,
            ),
            "store dead-letter payload",
        )
        return f"postgresql:migration.dead_letter_payloads/{source.topic}/{source.partition}/{source.offset}"

    async def _connect(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                if not self.settings.database_url:
                    raise RuntimeError("DATABASE_URL is not set: a large dead-letter payload cannot be stored")
                self._pool = await asyncpg.create_pool(self.settings.database_url, min_size=0, max_size=1)
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def correlation_of(source: Located | Any) -> str | None:
    """The ``correlation_id`` header a message came with (FastStream's, or any producer's)."""
    for name, value in getattr(source, "headers", None) or ():
        if name in ("correlation_id", "correlation-id") and isinstance(value, (bytes, bytearray)) and len(value) <= 200:
            return bytes(value).decode("utf-8", "replace")
    return None


_registry: dict[int, DeadLetters] = {}


def for_broker(broker: KafkaBroker, topic: str, settings: Settings, service: str = "") -> DeadLetters:
    """The one :class:`DeadLetters` of this broker (made by ``shared.platform.kafka.make_broker``)."""
    letters = _registry[id(broker)] = DeadLetters(broker, topic, settings, service)
    return letters


async def reject(
    broker: KafkaBroker, topic: str, source: Located | Any, body: bytes, unusable: Unusable, *, where: str | None = None
) -> None:
    """Dead-letter a message a consumer will not act on, counted: a refused signature as
    ``schoolmig.messages.refused``; anything else, when ``where`` names the consumer, as a
    consistency error there."""
    await dead_letter(broker, topic, source, body, unusable.reason, unusable.detail)
    if unusable.refused:
        count_refused(unusable.reason, source.topic)
    elif where is not None:
        count_error("consistency", f"{where}: unusable message")


async def dead_letter(
    broker: KafkaBroker,
    topic: str,
    source: Located | Any,
    body: bytes,
    reason: str,
    detail: str,
    *,
    error_class: str | None = None,
    school_id: str | None = None,
    errors: list[FieldError] | None = None,
) -> None:
    """Publish ``body`` (read at ``source``) to the dead-letter ``topic`` with the reason."""
    letters = _registry.get(id(broker))
    if letters is None or letters.topic != topic:
        letters = for_broker(broker, topic, Settings())
    await letters.send(source, body, reason, detail, error_class=error_class, school_id=school_id, errors=errors)
