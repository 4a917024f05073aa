"""Ingest's promises: a foreign client can publish, a snapshot missing a chunk is reported
and never half-released, the audit is stored, published and shown, backups verify and
export byte for byte."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schoolmig.runner import wait_for_report
from schoolmig.sdk import build_envelopes
from schoolmig.stack import Stack
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from tests.integration.conftest import OPERATOR, cli, localstorage_dump, migrate, read_topic

pytestmark = pytest.mark.integration

STUDENT = {
    "id": "student-1",
    "name": "Ана",
    "email": "a@x",
    "status": "active",
    "joinDate": "2024-01-01",
    "dateOfBirth": "2010-01-01",
}


async def test_a_snapshot_from_a_foreign_kafka_client_migrates(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    """confluent-kafka (librdkafka), with the envelope built from docs/asyncapi.yaml alone."""
    from confluent_kafka import Producer

    content = localstorage_dump(students=[STUDENT, {**STUDENT, "id": "student-2", "email": "b@x"}])
    size = 40  # tiny chunks, to exercise reassembly
    parts = [content[i : i + size] for i in range(0, len(content), size)]
    school, snapshot = "it-foreign", "java-client-0001"
    manifest = {
        "kind": "snapshot.manifest",
        "schema_version": 1,
        "school_id": school,
        "snapshot_id": snapshot,
        "format": "localstorage_dump",
        "taken_at": "2024-06-01T12:00:00Z",
        "size_bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "chunk_count": len(parts),
        "chunk_sha256": [hashlib.sha256(p).hexdigest() for p in parts],
    }
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": False})
    producer.produce(Topics.from_settings(settings).ingest, json.dumps(manifest).encode(), key=school.encode())
    for index, part in enumerate(parts):
        chunk = {
            "kind": "snapshot.chunk",
            "schema_version": 1,
            "school_id": school,
            "snapshot_id": snapshot,
            "index": index,
            "data_b64": base64.b64encode(part).decode(),
        }
        producer.produce(Topics.from_settings(settings).ingest, json.dumps(chunk).encode(), key=school.encode())
    assert producer.flush(10) == 0

    report = await wait_for_report(pool, school, snapshot, time.monotonic() + 60)
    assert report is not None
    assert report["domains"]["students"] == {"source": 2, "loaded": 2, "quarantined": 0}
    assert len(parts) > 5


async def test_a_snapshot_missing_a_chunk_is_reported_and_never_half_released(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    assert settings.kafka_bootstrap_servers
    content = localstorage_dump(
        students=[STUDENT] * 1 + [{**STUDENT, "id": f"student-{i}", "email": f"{i}@x"} for i in range(2, 40)]
    )
    manifest, parts = build_envelopes(content, "it-lossy", chunk_bytes=500)
    assert len(parts) >= 4
    topic = Topics.from_settings(settings).ingest
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for message in [manifest, *parts[:2], *parts[3:]]:  # chunk 2 is lost
            await producer.send_and_wait(topic, message.model_dump_json().encode(), key=b"it-lossy")
        events = await read_topic(
            settings.kafka_bootstrap_servers,
            Topics.from_settings(settings).events,
            want=10_000,
            group=f"it-ev-{uuid.uuid4()}",
            timeout_s=8,
        )
        incomplete = [e for e in events if e["type"] == "snapshot.incomplete" and e["school_id"] == "it-lossy"]
        assert len(incomplete) == 1
        assert incomplete[0]["missing_chunks"] == [2] and incomplete[0]["chunks_expected"] == len(parts)
        released = await pool.fetchval("SELECT released_at FROM migration.snapshots WHERE school_id = 'it-lossy'")
        assert released is None
        assert await pool.fetchval("SELECT count(*) FROM migration.loaded_records WHERE school_id = 'it-lossy'") == 0
        assert not [e for e in events if e["type"] == "snapshot.released" and e["school_id"] == "it-lossy"]

        # The lost chunk turns up late: the snapshot is complete, and released whole.
        await producer.send_and_wait(topic, parts[2].model_dump_json().encode(), key=b"it-lossy")
    finally:
        await producer.stop()
    report = None
    for _ in range(240):
        report = await pool.fetchval("SELECT report FROM migration.reports WHERE school_id = 'it-lossy'")
        if report:
            break
        await asyncio.sleep(0.25)
    assert report is not None and report["domains"]["students"]["loaded"] == 39
    assert await pool.fetchval("SELECT count(*) FROM migration.incomplete_snapshots WHERE school_id = 'it-lossy'") == 0


async def test_the_audit_is_stored_published_and_shown(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    content = localstorage_dump(
        students=[
            {**STUDENT, "classId": "class-1"},
            {**STUDENT, "id": "student-2", "name": "Марко", "email": "a@x", "classId": "class-9"},
        ],
        classes=[
            {
                "id": "class-1",
                "name": "English",
                "teacher": {"id": "teacher-7", "name": "T"},
                "studentIds": ["student-1"],
                "students": 1,
            }
        ],
        grades="[{",
        theme="dark",
    )
    report = await migrate(settings, pool, "it-audit", content)
    # A value lost in the browser is a critical finding: the school waits at the audit gate.
    assert report["phase"] == "registered" and "1 critical audit finding" in report["blocked"]
    assert report["domains"]["students"]["source"] == 2
    audit = await pool.fetchrow("SELECT summary, findings FROM migration.audits WHERE school_id = 'it-audit'")
    assert audit["summary"]["findings"] == {
        "orphaned_reference": 2,
        "shared_email": 2,
        "unreadable_value": 1,
    }
    assert audit["summary"]["critical_findings"] == 1
    assert audit["summary"]["unknown_keys"] == ["theme"]
    orphans = {
        (f["domain"], f["record_id"], f["field"], f["ref_id"]) for f in audit["findings"] if f["type"] == "orphaned_reference"
    }
    assert orphans == {("students", "student-2", "classId", "class-9"), ("classes", "class-1", "teacher.id", "teacher-7")}

    assert settings.kafka_bootstrap_servers
    events = await read_topic(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).events,
        want=10_000,
        group=f"it-ev-{uuid.uuid4()}",
        timeout_s=4,
    )
    [event] = [e for e in events if e["type"] == "audit.completed" and e["school_id"] == "it-audit"]
    assert event["findings_total"] == 5 and event["snapshot_id"] == report["snapshot_id"]
    assert "a@x" not in json.dumps(event) and "Марко" not in json.dumps(event, ensure_ascii=False)

    shown = cli(settings, "audit", "--school", "it-audit")
    assert shown.returncode == 0, shown.stderr
    assert "orphaned_reference" in shown.stdout and "unknown keys (not migrated): theme" in shown.stdout
    as_json = json.loads(cli(settings, "audit", "--school", "it-audit", "--json").stdout)
    assert as_json["snapshot_id"] == report["snapshot_id"]
    assert cli(settings, "audit", "--school", "it-nobody").returncode == 1

    # An operator overrides it with a written reason; the trail keeps who and why.
    assert (
        cli(settings, "override-audit", "--school", "it-audit", "--reason", "grades are lost in the browser too").returncode == 0
    )
    for _ in range(240):
        report = await pool.fetchval("SELECT report FROM migration.reports WHERE school_id = 'it-audit'")
        if report["phase"] != "registered":
            break
        await asyncio.sleep(0.25)
    assert report["phase"] == "validated" and "blocked" not in report
    audited = await pool.fetchval(
        "SELECT reason FROM migration.phase_transitions WHERE school_id = 'it-audit' AND to_phase = 'audited'"
    )
    assert f"overridden: grades are lost in the browser too ({OPERATOR})" in audited  # who signed it


async def test_backups_verify_and_export_byte_for_byte(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    content = localstorage_dump(students=[STUDENT], notes="Ѓ ж 🙂 \u2028 trailing ")
    report = await migrate(settings, pool, "it-backup", content)
    out = tmp_path / "exported.json"
    exported = cli(settings, "backup", "export", "--school", "it-backup", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert out.read_bytes() == content
    verified = cli(settings, "backup", "verify", "--school", "it-backup")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    path = Path(await pool.fetchval("SELECT file_path FROM migration.backups WHERE school_id = 'it-backup'"))
    assert path.read_bytes() == content and path.parent.name == "it-backup"
    assert path.with_suffix(".json.sha256").read_text().split()[0] == hashlib.sha256(content).hexdigest()
    assert report["snapshot_id"] in path.name

    path.write_bytes(content + b" ")  # the file copy is damaged
    damaged = cli(settings, "backup", "verify", "--school", "it-backup")
    assert damaged.returncode == 1 and "✗" in damaged.stdout
