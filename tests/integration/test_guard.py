"""The consumer's error handling (``shared.failures.guard.Guard``) on a real broker, with a handler that fails.

A handler that raises through a message's own fault is tried ``max_attempts`` times, then
the message is in the dead letter as ``handler_failed`` with the exception's class, and
the partition moves on. A handler that raises a transient error pauses only that message's
partition: the consumer's other partitions keep flowing meanwhile, and the message is
handled once the trouble passes. Nothing is skipped, nothing loops.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream.kafka import KafkaMessage

from schoolmig.runner import wait_for_report
from schoolmig.stack import Stack
from shared.failures.guard import guarded_broker
from shared.failures.policy import Stage
from shared.platform.embedded import EmbeddedKafka
from shared.platform.kafka import consumer_options, raw_body
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from tests.integration.conftest import localstorage_dump, read_topic


async def test_a_failing_message_is_dead_lettered_after_bounded_tries_and_a_flaky_one_waits_alone(
    kafka: EmbeddedKafka, settings: Settings
) -> None:
    topic = f"it-guard-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()

    tries: dict[bytes, int] = {}
    handled: list[tuple[bytes, float]] = []
    broker, _ = guarded_broker(settings.model_copy(update={"max_attempts": 3}), Stage.TRANSFORM)

    @broker.subscriber(topic, **consumer_options(settings, f"it-guard-{uuid.uuid4().hex[:6]}"), decoder=raw_body)
    async def handle(body: bytes, message: KafkaMessage) -> None:
        tries[body] = tries.get(body, 0) + 1
        if body == b"poison":
            raise ValueError("this message's own fault")
        if body == b"flaky" and tries[body] <= 3:
            raise ConnectionResetError("the database went away")  # transient: an OSError
        handled.append((body, time.monotonic()))

    await broker.start()
    try:
        await broker.publish(b"poison", topic, partition=0)
        await broker.publish(b"after-poison", topic, partition=0)
        await broker.publish(b"flaky", topic, partition=1)
        for i in range(5):  # partition 0 keeps flowing while partition 1 waits for its flaky message
            await broker.publish(f"steady-{i}".encode(), topic, partition=0)
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and b"flaky" not in [b for b, _ in handled]:
            await asyncio.sleep(0.1)
    finally:
        await broker.stop()

    order = [b for b, _ in handled]
    assert tries[b"poison"] == 3  # bounded: tried three times, then dead-lettered
    assert b"poison" not in order and b"after-poison" in order  # the partition moved on past it
    assert tries[b"flaky"] == 4 and b"flaky" in order  # waited out the trouble, then handled once
    at = dict(handled)
    # The other partition was not held up: all of it was handled while the flaky message waited
    # (its back-off alone is 0.5 + 1 + 2 s; the steady ones were sent within 1 s).
    assert max(at[f"steady-{i}".encode()] for i in range(5)) < at[b"flaky"]
    assert sorted(order) == sorted({*order})  # nothing handled twice
    letters = await read_topic(
        kafka.bootstrap_servers,
        Topics.from_settings(settings).deadletter,
        want=10**6,
        group=f"it-guard-dl-{uuid.uuid4().hex[:6]}",
        timeout_s=4,
    )
    mine = [d for d in letters if d["topic"] == topic]
    assert [(d["reason"], d["error_class"], d["partition"]) for d in mine] == [("handler_failed", "ValueError", 0)]


class _NotUtf8Key(str):
    """A header key that reaches the wire as bytes that are not UTF-8 (other clients can send one)."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"\xff\xfekey"


async def test_a_header_key_that_is_not_utf8_is_dead_lettered_and_the_partition_moves_on(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.producer import message_accumulator
    from aiokafka.producer import producer as producer_module
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

    from schoolmig.sdk import build_envelopes

    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    # Our client encodes keys itself; its pure-Python batch builder calls key.encode(), which
    # lets this test put bytes on the wire no well-behaved client would.
    monkeypatch.setattr(message_accumulator, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    monkeypatch.setattr(producer_module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        bad = await producer.send_and_wait(
            topics.ingest, b'{"kind":"snapshot.chunk"}', key=b"it-bad-key", partition=0, headers=[(_NotUtf8Key("k"), b"v")]
        )
        manifest, parts = build_envelopes(localstorage_dump(students=[]), "it-after-bad-key")
        for part in (manifest, *parts):  # behind it on the same partition
            await producer.send_and_wait(topics.ingest, part.model_dump_json().encode(), key=b"it-after-bad-key", partition=0)
    finally:
        await producer.stop()
    report = await wait_for_report(pool, "it-after-bad-key", manifest.snapshot_id, time.monotonic() + 60)
    assert report is not None and report["phase"] == "validated"
    letters = await read_topic(
        settings.kafka_bootstrap_servers, topics.deadletter, want=10**6, group=f"it-badkey-{uuid.uuid4().hex[:6]}", timeout_s=4
    )
    mine = [d for d in letters if (d["topic"], d["partition"], d["offset"]) == (topics.ingest, 0, bad.offset)]
    assert [d["reason"] for d in mine] == ["unreadable_record"]
