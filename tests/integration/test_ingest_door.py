"""The public door: idempotent re-publishing, bad input to dead letter, and no stall after it."""

from __future__ import annotations

import json

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schoolmig.stack import Stack
from shared.settings import Settings
from shared.topics import Topics
from tests.integration.conftest import localstorage_dump, migrate

pytestmark = pytest.mark.integration


async def test_publishing_the_same_snapshot_twice_releases_it_once(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    content = localstorage_dump(students=[{"id": "student-1", "name": "A", "email": "a@x", "status": "active",
                                            "joinDate": "2024-01-01", "dateOfBirth": "2010-01-01"}])  # fmt: skip
    first = await migrate(settings, pool, "it-twice", content)
    second = await migrate(settings, pool, "it-twice", content)
    assert first["snapshot_id"] == second["snapshot_id"]
    assert await pool.fetchval("SELECT count(*) FROM migration.snapshots WHERE school_id = 'it-twice'") == 1
    transitions = await pool.fetch(
        "SELECT to_phase FROM migration.phase_transitions WHERE school_id = 'it-twice' ORDER BY id"
    )
    assert [t["to_phase"] for t in transitions] == ["registered", "audited", "backed_up", "dual_write", "synced", "validated"]
    backup = await pool.fetchval("SELECT content FROM migration.backups WHERE school_id = 'it-twice'")
    assert bytes(backup) == content


async def test_garbage_goes_to_dead_letter_and_the_next_snapshot_still_migrates(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topics.ingest, b"\x00not json at all", key=b"it-bad")
        await producer.send_and_wait(topics.ingest, json.dumps({"kind": "snapshot.manifest", "schema_version": 99}).encode(), key=b"it-bad")
        await producer.send_and_wait(topics.ingest, json.dumps({"kind": "snapshot.chunk", "schema_version": 1, "school_id": "bad id!", "snapshot_id": "x", "index": 0, "data_b64": ""}).encode(), key=b"it-bad")
    finally:
        await producer.stop()

    report = await migrate(settings, pool, "it-after-garbage", localstorage_dump(students=[]))
    assert report["phase"] == "validated"

    consumer = AIOKafkaConsumer(
        topics.deadletter, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest",
        group_id="it-deadletter-reader",
    )  # fmt: skip
    await consumer.start()
    try:
        letters = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            letters += [json.loads(m.value) for ms in batch.values() for m in ms]
            if len(letters) >= 3:
                break
    finally:
        await consumer.stop()
    assert [letter["reason"] for letter in letters] == ["invalid_envelope"] * 3
    assert all(letter["topic"] == topics.ingest for letter in letters)
    messages = sorted(letter["message"] for letter in letters)
    assert messages[0] == "(message): json_invalid"
    assert messages[1] == "snapshot.chunk.school_id: string_pattern_mismatch"  # the field, not its value
    assert messages[2].startswith("snapshot.manifest.schema_version: literal_error")
    assert not any("bad id!" in letter["message"] for letter in letters)
