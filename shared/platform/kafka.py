"""Kafka wiring shared by the services and the CLI: broker factory, topic creation, and the
pause-and-rewind of partitions (:func:`hold`) the failure policy and the loader use.

Nothing here depends on the embedded broker: it is plain Kafka protocol (no idempotent
producer or transactions, which not every Kafka-compatible broker supports; at-least-once
delivery with idempotent consumers is the design).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy

from shared.platform.logs import log_limited
from shared.platform.settings import Settings
from shared.platform.topics import Topics

log = logging.getLogger(__name__)
#: Every producer's limit for one message (Kafka's default ``message.max.bytes`` is about this).
MAX_MESSAGE_BYTES = 1024 * 1024
#: The header of a placeholder for a record the Kafka client could not parse (see below).
UNREADABLE = "schoolmig-unreadable"


def hold(consumer: Any, rewind: dict[tuple[str, int], int], delay_s: float) -> None:
    """Deliver these partitions again from the given offsets after ``delay_s`` (the commit
    that follows stops there); every other partition goes on meanwhile."""
    partitions = [TopicPartition(topic, partition) for topic, partition in rewind]
    for tp in partitions:
        consumer.seek(tp, rewind[(tp.topic, tp.partition)])
    consumer.pause(*partitions)
    asyncio.get_running_loop().call_later(delay_s, _resume, consumer, partitions)


def _resume(consumer: Any, partitions: list[TopicPartition]) -> None:
    with contextlib.suppress(Exception):  # revoked meanwhile: the new owner starts unpaused
        consumer.resume(*[tp for tp in partitions if tp in consumer.assignment()])


def _guard_record_parsing() -> None:
    """aiokafka decodes a header's *key* as UTF-8 while it parses a fetched batch, before any
    handler or middleware runs. A key that is not UTF-8 (any client but ours can send one)
    raised there, out of every poll, forever: the partition stalled, and a batch consumer
    lost the other partitions' records taken in the same poll. Wrapped here: the record that
    cannot be parsed is handed over as a placeholder (no key, no value, the ``UNREADABLE``
    header saying why), so the consumer dead-letters it with its topic, partition and offset
    and moves on. Records after it in the same producer batch cannot be reached by the parser
    either; each becomes its own placeholder in turn (one fetch each): none is skipped silently.
    """
    from aiokafka.consumer.fetcher import PartitionRecords
    from aiokafka.errors import CorruptRecordException
    from aiokafka.structs import ConsumerRecord

    if getattr(PartitionRecords, "_schoolmig_guarded", False):
        return
    original = PartitionRecords._unpack_records

    def unpack_guarded(self: Any) -> Any:
        records = original(self)
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except (UnicodeDecodeError, ValueError, CorruptRecordException) as exc:  # a record the library cannot parse
                if isinstance(exc, CorruptRecordException) and not isinstance(exc.__cause__, ValueError):
                    raise  # a bad CRC: the batch is fetched again, as aiokafka intends
                offset = self.next_fetch_offset
                log.error(
                    "%s[%d]@%d cannot be parsed (%s): handed over as unreadable",
                    self._tp.topic,
                    self._tp.partition,
                    offset,
                    type(exc).__name__,
                )
                self.next_fetch_offset = offset + 1  # the fetch after this one starts past it
                yield ConsumerRecord(
                    self._tp.topic,
                    self._tp.partition,
                    offset,
                    -1,
                    0,
                    None,
                    None,
                    None,
                    -1,
                    -1,
                    [
                        (
                            UNREADABLE,
                            f"the record cannot be parsed ({type(exc).__name__}: e.g. a header key that is not UTF-8)".encode(),
                        )
                    ],
                )
                return
            yield record

    PartitionRecords._unpack_records = unpack_guarded
    PartitionRecords._schoolmig_guarded = True


async def safe_parser(msg: Any, original: Any) -> Any:
    """FastStream's parser, after making every header readable: a value that is not UTF-8
    (or null) is replaced, never raised on (the message would vanish: neither handled nor
    dead-lettered), and ``reply_to`` is dropped (no subscriber answers anyone: a client
    could otherwise make a service publish to any topic it names)."""
    for record in msg if isinstance(msg, tuple) else (msg,):
        record.headers = [(key, _header_value(value)) for key, value in (record.headers or ()) if key != "reply_to"]
    return await original(msg)


def _header_value(value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        return b""
    return bytes(value).decode("utf-8", "replace").encode("utf-8")


def make_client_publisher(settings: Settings, *, client_id: str) -> KafkaBroker:
    """A producer for the topics clients read (``Topics.control`` and ``Topics.outcomes``), compressed the way
    every stock client reads (``SCHOOLMIG_CLIENT_COMPRESSION``: none or gzip). Started at
    start-up (``connect()``), stopped at shutdown."""
    if not settings.kafka_bootstrap_servers:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set")
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"schoolmig-{client_id}-clients",
        acks="all",
        enable_idempotence=False,
        compression_type=None if settings.client_compression == "none" else settings.client_compression,
        max_request_size=MAX_MESSAGE_BYTES,
        logger=logging.getLogger("faststream.access.kafka"),
    )


def make_broker(settings: Settings, *, client_id: str, middlewares: Sequence[Any] = ()) -> KafkaBroker:
    """The service's broker (``shared.failures.guard.guarded_broker`` adds the guard). Its
    consumers hand a record the Kafka client cannot parse over as a placeholder."""
    _guard_record_parsing()
    if not settings.kafka_bootstrap_servers:
        raise RuntimeError(
            "KAFKA_BOOTSTRAP_SERVERS is not set; run services through `schoolmig up`, "
            "which starts an embedded broker, or point them at a Kafka cluster."
        )
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"schoolmig-{client_id}",
        graceful_timeout=settings.graceful_timeout_s,
        acks="all",
        enable_idempotence=False,
        compression_type=None if settings.compression == "none" else settings.compression,  # type: ignore[arg-type]
        max_request_size=MAX_MESSAGE_BYTES,
        # Consumers see a topic created again (``keep_topics``) within one check, not the
        # client's default of five minutes.
        metadata_max_age_ms=int(settings.topic_check_s * 1000),
        middlewares=list(middlewares),
        log_level=logging.DEBUG,  # FastStream's per-message "Received/Processed" lines
        # Ours, so FastStream adds no handler of its own: its lines go through the process's
        # one handler, in its format (``shared.platform.logs``: text or JSON).
        logger=logging.getLogger("faststream.access.kafka"),
    )
    return broker


async def raw_body(msg: KafkaMessage) -> bytes:
    """The bytes as sent (one message): the handler checks and decodes them itself."""
    return bytes(msg.body)


async def raw_bodies(msg: KafkaMessage) -> list[bytes] | bytes:
    """The bytes as sent (a batch subscriber: each message's): the handler decodes them with
    the codec it chose (``shared.wire.batching``), whatever content-type a producer set."""
    body = msg.body
    return [bytes(b) for b in body] if isinstance(body, list) else bytes(body)


def consumer_options(settings: Settings, group: str, *, batch: bool = False) -> dict[str, Any]:
    """How every schoolmig consumer reads: its own group, from the beginning when the group
    is new, committing only after the handler succeeded (an exception rewinds instead)."""
    options: dict[str, Any] = {
        "group_id": group,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,  # the Guard swallows what it handled; this is the backstop
        "no_reply": True,  # no RPC: a reply_to header must not make a service publish anywhere
        "parser": safe_parser,
    }
    if batch:
        options |= {
            "batch": True,
            "max_records": settings.batch_size,
            "batch_timeout_ms": settings.batch_timeout_ms,
            # A few messages per partition per fetch: a poll then holds every domain's next
            # batches side by side (parents, sent first, with their children) instead of a
            # long run of one partition, which made the loader park most children.
            "max_partition_fetch_bytes": settings.fetch_partition_bytes,
        }
    return options


_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def topic_partitions(consumer: Any, topic: str, attempts: int = 20) -> list[TopicPartition]:
    """A started consumer's view of ``topic``'s partitions, waiting a moment (``attempts`` tenths
    of a second) for its metadata; none when the topic is not there."""
    for _ in range(attempts):
        if found := consumer.partitions_for_topic(topic):
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer._client.force_metadata_update()  # noqa: SLF001 (aiokafka has no public call)
        await asyncio.sleep(0.1)
    return []


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic the pipeline uses that does not exist yet; return those created.
    Run at every service's start, then every ``SCHOOLMIG_TOPIC_CHECK_S`` (``keep_topics``)."""
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
                response = await admin.create_topics(
                    [
                        NewTopic(t, settings.partitions, settings.replication_factor, topic_configs=compacted.get(t, {}))
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:  # a concurrent creator won the race
                pass
            else:
                # The broker answers per topic; an error there is not raised by the client.
                refused = [(e[0], e[1]) for e in getattr(response, "topic_errors", []) if e[1] not in (0, _ALREADY_EXISTS)]
                if refused:
                    raise RuntimeError(
                        f"the broker refused to create {len(refused)} topic(s): "
                        + ", ".join(f"{t} (Kafka error {code})" for t, code in refused[:5])
                    )
            log.info("created %d topics", len(missing))
        return missing
    finally:
        await admin.close()


async def describe_topics(settings: Settings) -> list[dict[str, Any]]:
    """Every topic the pipeline uses: whether it exists, its partitions, and whether it is
    compacted as it must be (the control topic), for ``schoolmig topics``."""
    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [t for t in topics.all() if t in existing]
        partitions = {d["topic"]: len(d["partitions"]) for d in (await admin.describe_topics(present) if present else [])}
        return [
            {"topic": t, "exists": t in existing, "partitions": partitions.get(t, 0), "compacted": t == topics.control}
            for t in topics.all()
        ]
    finally:
        await admin.close()


async def keep_topics(settings: Settings) -> None:
    """One round of the topic check every service runs: topics that vanished (a broker that
    lost its data, a topic deleted by hand) are created again, so producers and consumers
    find them; consumers then start the new topics from the beginning (their group's offsets
    went with the broker, and ``auto_offset_reset`` is ``earliest``), and the coordinator
    re-drives what was lost in flight. Said once per round, as a warning, when it happens."""
    if created := await ensure_topics(settings):
        log_limited(
            logging.WARNING,
            "%d topic(s) were missing (a broker that lost its data?); created again: %s",
            len(created),
            ", ".join(created[:5]) + (" …" if len(created) > 5 else ""),
            every_s=0.0,
        )
