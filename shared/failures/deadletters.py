"""Dead letters: a message a consumer cannot use, kept whole with its reason, so that the
partition moves on and nothing is dropped without a trace. Each stage has one
:class:`DeadLetters` (made with its broker by ``shared.failures.guard.guarded_broker``);
every letter carries the topic, partition and offset it was read at, the stage, the reason,
and the exception's class when one was raised (as Kafka Connect's error reporters do).

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

from shared.failures.policy import Stage, Unusable, classify, with_retries
from shared.platform.db import pg_text
from shared.platform.settings import Settings
from shared.platform.signing import Keyring, publish
from shared.platform.telemetry import count_dead_letter, count_error, count_refused
from shared.wire import chunks
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

    def __init__(self, broker: KafkaBroker, topic: str, settings: Settings, stage: Stage) -> None:
        self.broker = broker
        self.topic = topic
        self.settings = settings
        self.keyring = Keyring.for_service(settings)
        self.stage = stage
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
                stage=self.stage.value,
                school_id=school_id,
                correlation_id=(correlation := correlation_of(source)),
                errors=errors or [],
            ),
            self.topic,
            key=key,  # one sender's dead letters stay in order on one partition
            correlation_id=correlation,
        )
        count_dead_letter(self.stage.value, reason)
        log.warning("dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, reason)
        await self._note(source, reason, school_id)

    async def _note(self, source: Located | Any, reason: str, school_id: str | None) -> None:
        """Where and why, for the status page and the report (:func:`note_dead_letter`), in one
        try of at most :data:`NOTE_TIMEOUT_S` each to connect and to write. The letter itself is
        on the dead-letter topic already: a database that is away costs the page a line, never
        the letter, and never holds the stage up (logged)."""
        if not self.settings.database_url:
            return
        try:  # one bounded try: the stage never waits on the page's database
            pool = await asyncio.wait_for(self._connect(), NOTE_TIMEOUT_S)
            await asyncio.wait_for(note_dead_letter(pool, source, self.stage.value, reason, school_id), NOTE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 (the letter is kept on its topic whatever happens here)
            log.warning("dead letter not noted for the status page (%s)", type(exc).__name__)

    async def reject(self, source: Located | Any, body: bytes, unusable: Unusable, *, counted: bool = False) -> None:
        """Dead-letter a message the stage will not act on, counted: a refused signature as
        ``schoolmig.messages.refused``; anything else, when ``counted``, as a consistency
        error of this stage."""
        await self.send(source, body, unusable.reason, unusable.detail)
        if unusable.refused:
            count_refused(unusable.reason, source.topic)
        elif counted:
            count_error("consistency", f"{self.stage}: unusable message")

    async def isolate(self, source: Located | Any, body: bytes, exc: Exception, what: str, *, pure: bool = False) -> None:
        """One message's failure inside a handler that goes on with the others: the
        infrastructure's is raised again (the guard retries the whole poll), the message's own
        is dead-lettered as ``handler_failed`` with the exception's class. ``pure``: the
        failing code does no I/O, so whatever it raised is the message's."""
        if not pure and classify(exc) == "transient":
            raise exc
        name = type(exc).__name__
        await self.send(source, body, "handler_failed", f"{what} raised {name}", error_class=name)
        count_error("input", f"{self.stage}: handler_failed")

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


KEEP_NOTED = 1000
NOTE_TIMEOUT_S = 2.0


async def note_dead_letter(pool: asyncpg.Pool, source: Located | Any, stage: str, reason: str, school_id: str | None) -> None:
    """One dead letter's where and why in ``migration.recent_dead_letters`` (never its payload
    or message), the newest :data:`KEEP_NOTED` kept; the same message noted once."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO migration.recent_dead_letters (stage, reason, school_id, topic, "partition", "offset", source_ts)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
            """,
            stage,
            pg_text(reason),
            pg_text(school_id),
            pg_text(str(source.topic)),
            int(source.partition),
            int(source.offset),
            int(getattr(source, "timestamp", None) or -1),
        )
        await conn.execute(
            "DELETE FROM migration.recent_dead_letters WHERE id <= (SELECT max(id) FROM migration.recent_dead_letters) - $1",
            KEEP_NOTED,
        )


def correlation_of(source: Located | Any) -> str | None:
    """The ``correlation_id`` header a message came with (FastStream's, or any producer's)."""
    for name, value in getattr(source, "headers", None) or ():
        if name in ("correlation_id", "correlation-id") and isinstance(value, (bytes, bytearray)) and len(value) <= 200:
            return bytes(value).decode("utf-8", "replace")
    return None
