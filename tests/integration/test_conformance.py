"""A client team with only docs/asyncapi.yaml: publish a snapshot and changes, read the outcome
of each, read the school's mode, with a client that is not the SDK (confluent-kafka:
librdkafka, as Python teams use it and as Java's client behaves). Every message sent and read
is checked against the document's schemas, and the topics clients read are shown to be
stored uncompressed or gzip, which kafkajs reads without plug-ins. (kafkajs itself cannot be
run here: the embedded broker, Tansu, never answers its first ApiVersions request.)"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import pytest
import yaml

from schoolmig.runner import wait_for_report
from schoolmig.stack import Stack
from shared.catalog.ids import row_id_text
from shared.platform.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())


def address(payload_schema: str, settings: Settings) -> str:
    """The topic of the channel whose messages are ``payload_schema`` (else one of a union of
    which it is a part), from the document, in the test's prefix."""
    exact, among = [], []
    for channel in SPEC["channels"].values():
        for message in channel["messages"].values():
            payload = SPEC["components"]["messages"][message["$ref"].split("/")[-1]]["payload"]
            target = SPEC["components"]["schemas"][payload["$ref"].split("/")[-1]]
            topic = str(channel["address"]).replace("schoolmig.", f"{settings.topic_prefix}.", 1)
            if payload["$ref"].endswith(f"/{payload_schema}"):
                exact.append(topic)
            elif any(o.get("$ref", "").endswith(f"/{payload_schema}") for o in target.get("oneOf", [])):
                among.append(topic)
    if len(exact) == 1:
        return exact[0]
    assert not exact and len(among) == 1, f"{payload_schema}: on {exact or among}"
    return among[0]


def snapshot_messages(school: str, snapshot_id: str, content: bytes, **manifest_fields: Any) -> list[dict[str, Any]]:
    """A one-chunk snapshot, manifest and chunk, as the document describes them."""
    digest = hashlib.sha256(content).hexdigest()
    manifest = {
        "kind": "snapshot.manifest",
        "school_id": school,
        "snapshot_id": snapshot_id,
        "format": "localstorage_dump",
        "size_bytes": len(content),
        "sha256": digest,
        "chunk_count": 1,
        "chunk_sha256": [digest],
        **manifest_fields,
    }
    chunk = {
        "kind": "snapshot.chunk",
        "school_id": school,
        "snapshot_id": snapshot_id,
        "index": 0,
        "data_b64": base64.b64encode(content).decode(),
    }
    return [manifest, chunk]


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator for one schema of the document's components (their $refs resolved in it)."""
    document = {"components": SPEC["components"], **SPEC["components"]["schemas"][schema_name]}
    return jsonschema.Draft202012Validator(document)


def read_all(bootstrap: str, topic: str, *, until: Any, timeout_s: float = 45) -> list[dict[str, Any]]:
    """Messages of ``topic`` from its start, read with librdkafka, until ``until(messages)``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"conformance-{uuid.uuid4()}", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])  # no group to join: read it all
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(found):
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            found.append({"value": json.loads(message.value()), "headers": dict(message.headers() or [])})
    finally:
        consumer.close()
    return found


async def test_a_client_built_from_the_document_publishes_and_reads_its_outcomes_and_mode(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    from confluent_kafka import Producer

    assert settings.kafka_bootstrap_servers
    ingest, outcomes, modes = (
        address("SnapshotManifest", settings),
        address("ChangeOutcome", settings),
        address("SchoolMode", settings),
    )
    school, client = "it-conformance", "kiosk-7"
    student = {
        "id": "s1",
        "name": "A",
        "email": "a@x",
        "status": "active",
        "joinDate": "2024-09-01",
        "dateOfBirth": "2012-04-01T22:00:00.000Z",
    }
    content = json.dumps({"students": json.dumps([student])}).encode()
    manifest, chunk = snapshot_messages(
        school, "kiosk-7-reading-1", content, taken_at="2024-10-01T08:00:00Z", device_id=client, timezone="Europe/Skopje"
    )
    changes = {
        "kind": "changes",
        "school_id": school,
        "client_id": client,
        "timezone": "Europe/Skopje",
        "changes": [
            {
                "op": "update",
                "domain": "students",
                "record_id": "s1",
                "record": {**student, "name": "B"},
                "source_ts": "2025-01-01T10:00:00Z",
                "seq": 1,
            },
            {
                "op": "create",
                "domain": "students",
                "record_id": "s2",
                "record": {**student, "id": "s2", "email": "b@x", "status": "alumni"},
                "source_ts": "2025-01-01T10:00:01Z",
                "seq": 2,
            },
        ],
    }
    first_only = {**changes, "changes": changes["changes"][:1]}
    for name, message in (("SnapshotManifest", manifest), ("SnapshotChunk", chunk), ("ChangeBatch", first_only)):
        validator(name).validate(message)  # what the document asks for, checked before sending
    with pytest.raises(jsonschema.ValidationError):  # the record rules travel with it: alumni is no status
        validator("ChangeBatch").validate(changes)
    # Sent anyway, as a client that does not check would: the pipeline answers it.

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "compression.type": "gzip"})
    for message in (manifest, chunk):
        producer.produce(ingest, json.dumps(message).encode(), key=school.encode(), headers=[("correlation_id", b"snap-1")])
    assert producer.flush(10) == 0
    report = await wait_for_report(pool, school, "kiosk-7-reading-1", time.monotonic() + 60)
    assert report is not None
    producer.produce(ingest, json.dumps(changes).encode(), key=school.encode(), headers=[("correlation_id", b"changes-1")])
    assert producer.flush(10) == 0

    def settled(found: list[dict[str, Any]]) -> bool:
        mine = [m["value"] for m in found if m["value"].get("school_id") == school]
        return {(m.get("seq"), m.get("outcome")) for m in mine if m["type"] == "change.outcome"} >= {
            (1, "applied"),
            (2, "quarantined"),
        } and any(m["type"] == "report.ready" for m in mine)

    read = read_all(settings.kafka_bootstrap_servers, outcomes, until=settled)
    assert settled(read), [m["value"] for m in read]
    outcome_schema = validator("ChangeOutcome")
    for m in read:
        if m["value"].get("type") == "change.outcome":
            outcome_schema.validate(m["value"])
    validator("ReportReady").validate(next(m["value"] for m in read if m["value"]["type"] == "report.ready"))
    quarantined = next(m["value"] for m in read if m["value"].get("seq") == 2 and m["value"]["outcome"] == "quarantined")
    assert quarantined["reason"] == "invalid_enum"

    def hybrid(found: list[dict[str, Any]]) -> bool:
        return any(m["value"]["school_id"] == school and m["value"]["mode"] == "hybrid" for m in found)

    mode = read_all(settings.kafka_bootstrap_servers, modes, until=hybrid)
    latest = [m["value"] for m in mode if m["value"]["school_id"] == school][-1]
    validator("SchoolMode").validate(latest)
    assert latest["mode"] == "hybrid"
    # The date the browser in Skopje wrote through toISOString() is the school's own day.
    row = row_id_text(school, "students", "s1")
    assert await pool.fetchval("SELECT date_of_birth::text FROM students WHERE id = $1", row) == "2012-04-02"


async def batch_codecs(bootstrap: str, topic: str) -> set[int]:
    """The compression of every record batch stored in ``topic`` (0 none, 1 gzip, 2 snappy,
    3 lz4, 4 zstd), read with a plain Fetch, as the broker hands them to any client."""
    from aiokafka import TopicPartition
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.fetch import FetchRequest
    from aiokafka.record.memory_records import MemoryRecords

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    found: set[int] = set()
    try:
        await client.force_metadata_update()
        for partition in client.cluster.partitions_for_topic(topic) or ():
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            response = await client.send(leader, FetchRequest(100, 1, 50_000_000, 0, [(topic, [(partition, 0, 50_000_000)])]))
            for _, partitions in response.topics:
                for fetched in partitions:
                    records = MemoryRecords(fetched[-1])
                    while (batch := records.next_batch()) is not None:
                        found.add(batch.compression_type)
    finally:
        await client.close()
    return found


async def test_the_topics_clients_read_are_uncompressed_or_gzip(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    """What kafkajs (gzip only, without plug-ins), librdkafka and the Java client all read. The
    services' own topics keep SCHOOLMIG_COMPRESSION (zstd): the check sees codecs."""
    from confluent_kafka import Producer

    assert settings.kafka_bootstrap_servers
    student = {"id": "s1", "name": "A", "email": "c@x", "status": "active", "joinDate": "2024-09-01", "dateOfBirth": "2012-04-01"}
    school, content = "it-codecs", json.dumps({"students": json.dumps([student])}).encode()
    manifest, chunk = snapshot_messages(school, "codecs-1", content, taken_at=datetime.now(UTC).isoformat())
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for message in (manifest, chunk):
        producer.produce(address("SnapshotManifest", settings), json.dumps(message).encode(), key=school.encode())
    assert producer.flush(10) == 0
    assert await wait_for_report(pool, school, "codecs-1", time.monotonic() + 60) is not None  # a report.ready, a mode
    outcomes, modes = address("ChangeOutcome", settings), address("SchoolMode", settings)
    for topic in (outcomes, modes):
        codecs = await batch_codecs(settings.kafka_bootstrap_servers, topic)
        assert codecs and codecs <= {0, 1}, f"{topic}: batches compressed with {codecs}"
    internal = await batch_codecs(settings.kafka_bootstrap_servers, f"{settings.topic_prefix}.raw.students")
    assert 4 in internal  # zstd, as configured: a codec the check tells apart
