"""The public door: idempotent re-publishing, bad input to dead letter, and no stall after it."""

from __future__ import annotations

import base64
import json

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schoolmig.stack import Stack
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from tests.integration.conftest import localstorage_dump, migrate, read_topic

pytestmark = pytest.mark.integration


async def test_publishing_the_same_snapshot_twice_releases_it_once(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    content = localstorage_dump(
        students=[
            {
                "id": "student-1",
                "name": "A",
                "email": "a@x",
                "status": "active",
                "joinDate": "2024-01-01",
                "dateOfBirth": "2010-01-01",
            }
        ]
    )
    first = await migrate(settings, pool, "it-twice", content)
    second = await migrate(settings, pool, "it-twice", content, snapshot_id=first["snapshot_id"])  # the same upload again
    assert first["snapshot_id"] == second["snapshot_id"]
    assert await pool.fetchval("SELECT count(*) FROM migration.snapshots WHERE school_id = 'it-twice'") == 1
    transitions = await pool.fetch("SELECT to_phase FROM migration.phase_transitions WHERE school_id = 'it-twice' ORDER BY id")
    assert [t["to_phase"] for t in transitions] == ["registered", "audited", "backed_up", "dual_write", "synced", "validated"]
    backup = await pool.fetchval("SELECT content FROM migration.backups WHERE school_id = 'it-twice'")
    assert bytes(backup) == content


async def test_each_bad_input_goes_to_dead_letter_with_its_reason_and_the_next_snapshot_migrates(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    chunk = {"kind": "snapshot.chunk", "schema_version": 1, "school_id": "it-bad", "snapshot_id": "x", "index": 0, "data_b64": ""}
    bad = [
        b"\x00not json at all",
        json.dumps({**chunk, "schema_version": 99}).encode(),
        json.dumps({**chunk, "school_id": "bad id!"}).encode(),
        json.dumps({**chunk, "kind": "snapshot.rumour"}).encode(),
        json.dumps({**chunk, "data_b64": "%%%"}).encode(),
        b"{" + b" " * (600 * 1024) + b"}",
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        for body in bad:
            await producer.send_and_wait(topics.ingest, body, key=b"it-bad")
    finally:
        await producer.stop()

    report = await migrate(settings, pool, "it-after-garbage", localstorage_dump(students=[]))
    assert report["phase"] == "validated"

    everything = await read_topic(settings.kafka_bootstrap_servers, topics.deadletter, want=10_000, group="it-dl-1", timeout_s=4)

    async def payload(letter: dict[str, object]) -> bytes:
        if not letter.get("payload_ref"):
            return base64.b64decode(str(letter["payload_b64"]))
        stored = await pool.fetchval(  # too large to travel in a dead letter: kept in PostgreSQL
            'SELECT payload FROM migration.dead_letter_payloads WHERE topic = $1 AND partition = $2 AND "offset" = $3',
            letter["topic"],
            letter["partition"],
            letter["offset"],
        )
        return bytes(stored)

    letters = [letter for letter in everything if await payload(letter) in bad]  # other tests' letters too
    assert [letter["reason"] for letter in letters] == [
        "invalid_json",
        "unknown_schema_version",
        "invalid_school_id",
        "invalid_envelope",
        "invalid_chunk",
        "oversized",
    ]
    assert letters[-1]["payload_b64"] == "" and letters[-1]["payload_ref"].startswith("postgresql:")
    assert all(letter["topic"] == topics.ingest for letter in letters)
    assert base64.b64decode(letters[1]["payload_b64"]) == bad[1]  # kept whole
    assert "bad id!" not in json.dumps(letters)  # reasons name fields, never echo values


async def test_a_snapshot_over_the_size_limit_is_refused_at_its_manifest_and_its_chunks_are_not_kept(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    from schoolmig.sdk import build_envelopes

    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    manifest, chunks = build_envelopes(localstorage_dump(students=[]), "it-huge", snapshot_id="huge-1")
    claimed = manifest.model_copy(update={"size_bytes": settings.max_snapshot_bytes + 1})  # what it says is what counts
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for envelope in (claimed, *chunks):
            await producer.send_and_wait(topics.ingest, envelope.model_dump_json().encode(), key=b"it-huge")
    finally:
        await producer.stop()
    report = await migrate(settings, pool, "it-after-huge", localstorage_dump(students=[]))  # the door stays open
    assert report["phase"] == "validated"
    everything = await read_topic(
        settings.kafka_bootstrap_servers, topics.deadletter, want=10_000, group="it-dl-huge", timeout_s=4
    )
    claimed_size = f"{settings.max_snapshot_bytes + 1} bytes"  # this test's (the hostile suite sends others)
    letters = [letter for letter in everything if letter["reason"] == "snapshot_too_large" and claimed_size in letter["message"]]
    assert len(letters) == 1 and "SCHOOLMIG_MAX_SNAPSHOT_BYTES" in letters[0]["message"]
    assert await pool.fetchval("SELECT count(*) FROM migration.snapshot_chunks WHERE school_id = 'it-huge'") == 0
    assert (
        await pool.fetchval("SELECT reason FROM migration.refused_snapshots WHERE school_id = 'it-huge'") == "snapshot_too_large"
    )


async def test_a_message_larger_than_the_fetch_limit_is_still_delivered_whole(settings: Settings) -> None:
    """Consumers fetch SCHOOLMIG_FETCH_PARTITION_BYTES per partition, less than a batch may be:
    the broker must still hand over a larger message whole (Kafka's KIP-74), never skip it."""
    import os

    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    assert settings.kafka_bootstrap_servers and settings.fetch_partition_bytes < 300_000
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("it-fetch-a", 1, 1), NewTopic("it-fetch-b", 1, 1)])
    finally:
        await admin.close()
    sent = {(topic, i): os.urandom(300_000) for topic in ("it-fetch-a", "it-fetch-b") for i in range(3)}  # incompressible
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, compression_type="zstd", max_request_size=1024 * 1024
    )
    await producer.start()
    try:
        for (topic, _), body in sent.items():
            await producer.send_and_wait(topic, body, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        "it-fetch-a",
        "it-fetch-b",
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id="it-fetch",
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.fetch_partition_bytes,
    )
    await consumer.start()
    got: dict[tuple[str, int], bytes] = {}
    try:
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=500, max_records=settings.batch_size)
            got |= {(m.topic, m.offset): m.value for ms in batch.values() for m in ms}
            if len(got) == len(sent):
                break
    finally:
        await consumer.stop()
    assert got == sent


async def test_garbage_on_an_internal_topic_is_dead_lettered_and_loading_goes_on(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    from shared.catalog.domains import Domain
    from shared.platform.signing import Keyring

    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    wrong_kind = b'{"kind":"quarantine.batch","school_id":"it-internal","entries":[]}'
    bad = {
        topics.rows(Domain.GRADES): b"\x00 not a batch",
        topics.raw(Domain.STUDENTS): wrong_kind,
        topics.quarantine: b'{"kind":"rows.batch"}',
    }
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    sent: set[tuple[str, int, int]] = set()
    try:
        for topic, body in bad.items():  # signed, as a buggy service would send them
            signed = [(k, v.encode()) for k, v in Keyring.for_service(settings).sign(topic, body).items()]
            for partition in range(settings.partitions):  # whichever consumer reads it
                meta = await producer.send_and_wait(topic, body, key=b"it-internal", partition=partition, headers=signed)
                sent.add((topic, meta.partition, meta.offset))
    finally:
        await producer.stop()
    report = await migrate(
        settings,
        pool,
        "it-after-internal-garbage",
        localstorage_dump(
            students=[
                {
                    "id": "student-1",
                    "name": "A",
                    "email": "a@x",
                    "status": "active",
                    "joinDate": "2024-01-01",
                    "dateOfBirth": "2010-01-01",
                }
            ],
            grades=[{"id": "g-1", "assessmentId": "nowhere", "studentId": "student-1", "value": 90}],
        ),
    )
    assert report["phase"] == "validated"
    everything = await read_topic(
        settings.kafka_bootstrap_servers, topics.deadletter, want=10_000, group="it-dl-internal", timeout_s=4
    )
    mine = [letter for letter in everything if (letter["topic"], letter["partition"], letter["offset"]) in sent]
    reasons = {(letter["topic"], letter["reason"]) for letter in mine}
    assert reasons == {
        (topics.rows(Domain.GRADES), "invalid_internal_message"),
        (topics.raw(Domain.STUDENTS), "unexpected_kind"),
        (topics.quarantine, "invalid_internal_message"),
    }
    assert len(mine) == len(sent) == len(bad) * settings.partitions
