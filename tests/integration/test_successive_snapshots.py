"""Successive snapshots of one school: the newest one's view wins, and nothing else moves.

The issue's scenario: a school is migrated and validated; its next snapshot lacks one grade
and changes one payment's amount. It validates; the grade is marked deleted by that
snapshot (its rows stay, with their history) and reported; every other row is unchanged,
byte for byte in its data (records without timestamps keep the time of the school's first
snapshot, not the newer snapshot's). A snapshot taken earlier but released later is not
adopted, is noted as superseded, and changes nothing. Publishing the first file again (a
revert) is a new, newest snapshot: the grade is revived, the payment's amount reverts.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from schoolmig.demo import school_dump
from schoolmig.runner import wait_for_report
from schoolmig.sdk import build_envelopes
from schoolmig.stack import Stack
from services.coordinator.lag import consumer_groups, consumer_lag
from shared.catalog.tables import LOAD_ORDER
from shared.platform.settings import Settings
from shared.platform.topics import Topics

SCHOOL = "it-successive"
PROVENANCE = {"source_snapshot_id", "source_ts"}  # the write's, not the school's data


async def publish(settings: Settings, content: bytes, taken_at: datetime) -> str:
    assert settings.kafka_bootstrap_servers
    manifest, parts = build_envelopes(content, SCHOOL, taken_at=taken_at)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for part in (manifest, *parts):
            await producer.send_and_wait(settings.resolved_ingest_topic, part.model_dump_json().encode(), key=SCHOOL.encode())
    finally:
        await producer.stop()
    return manifest.snapshot_id


async def school_rows(pool: asyncpg.Pool, school: str = SCHOOL) -> dict[tuple[str, str], dict[str, Any]]:
    """Every row of the school, by (table, id), without the write's provenance."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in LOAD_ORDER:
        for r in await pool.fetch(f"SELECT to_jsonb(t) AS row FROM {spec.name} t WHERE school_id = $1", school):
            row = json.loads(r["row"]) if isinstance(r["row"], str) else dict(r["row"])
            rows[(spec.name, row["id"])] = {k: v for k, v in row.items() if k not in PROVENANCE}
    return rows


def _content(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "deleted_at"}


async def test_a_newer_snapshot_deletes_softly_changes_only_what_changed_and_an_older_one_is_superseded(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    assert settings.kafka_bootstrap_servers
    dump = school_dump(2, 5, messy=False)
    first = await publish(settings, json.dumps(dump).encode(), datetime(2024, 6, 1, tzinfo=UTC))
    report = await wait_for_report(pool, SCHOOL, first, time.monotonic() + 120)
    assert report is not None and report["phase"] == "validated", report and report.get("phase")
    before = await school_rows(pool)

    grades = json.loads(dump["grades"])
    gone = grades.pop(3)
    payments = json.loads(dump["payments"])
    changed = payments[0]
    changed["amount"] = float(changed["amount"]) + 100
    newer = {**dump, "grades": json.dumps(grades), "payments": json.dumps(payments)}
    second = await publish(settings, json.dumps(newer).encode(), datetime(2024, 6, 2, tzinfo=UTC))
    report = await wait_for_report(pool, SCHOOL, second, time.monotonic() + 120)
    assert report is not None and report["phase"] == "validated", report and report.get("validation")
    assert report.get("deleted") == {"grades": 1}
    deleted = await pool.fetch(
        "SELECT domain, legacy_id, snapshot_id FROM migration.deleted_records WHERE school_id = $1", SCHOOL
    )
    assert [(d["domain"], d["legacy_id"], d["snapshot_id"]) for d in deleted] == [("grades", str(gone["id"]), second)]

    after = await school_rows(pool)
    assert after.keys() == before.keys()  # nothing removed: the deleted grade's row stays, not live
    assert [table for table, _ in after if after[(table, _)]["deleted_at"] is not None] == ["grades"]
    differing = {key for key in after if _content(after[key]) != _content(before[key])}
    assert {table for table, _ in differing} == {"payments"} and len(differing) == 1, sorted(differing)[:5]

    # Taken before the snapshot the school is on, released after it: not adopted, nothing changes.
    older = {**dump, "schoolmigTestNote": "late"}  # (different content, so ingest has something to fan out)
    late = await publish(settings, json.dumps(older).encode(), datetime(2024, 5, 15, tzinfo=UTC))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        noted = await pool.fetchval(
            "SELECT superseded_by FROM migration.superseded_snapshots WHERE school_id = $1 AND snapshot_id = $2", SCHOOL, late
        )
        lag = await consumer_lag(settings.kafka_bootstrap_servers, consumer_groups(Topics.from_settings(settings)))
        if noted and not any(lag.values()):
            break
        await asyncio.sleep(0.5)
    assert noted == second
    late_report = await wait_for_report(pool, SCHOOL, late, time.monotonic() + 30)  # what `schoolmig run` waits for
    assert late_report is not None and (late_report["phase"], late_report["superseded_by"]) == ("superseded", second)
    phase, snapshot = await pool.fetchrow("SELECT phase, snapshot_id FROM migration.school_phase WHERE school_id = $1", SCHOOL)
    assert (phase, snapshot) == ("validated", second)
    assert await school_rows(pool) == after  # its records never overrode newer ones

    # A revert (A -> B -> A): the same file as the first is a new, newest snapshot, not "A again".
    revert = await publish(settings, json.dumps(dump).encode(), datetime(2024, 6, 3, tzinfo=UTC))
    assert revert != first
    report = await wait_for_report(pool, SCHOOL, revert, time.monotonic() + 120)
    assert report is not None and report["phase"] == "validated", report and [
        (d["domain"], d["issues"][:3]) for d in report["validation"]["domains"] if d["issues"]
    ]
    assert "deleted" not in report  # the grade is back: revived
    assert await pool.fetchval("SELECT count(*) FROM migration.deleted_records WHERE school_id = $1", SCHOOL) == 0
    assert await school_rows(pool) == before  # the payment's amount is the first one's again
