"""The loader's write path against real PostgreSQL: redelivery, reordering, last writer wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from services.loader.writer import Writer
from services.transform.records import transform
from shared.db import apply_migrations, migration_files
from shared.domains import Domain
from shared.embedded import EmbeddedPostgres
from shared.messages import MappedRecord, RawRecord

pytestmark = pytest.mark.integration


def mapped(school: str, legacy_id: str, name: str, ts: datetime, snapshot: str = "snap-1") -> MappedRecord:
    out = transform(
        RawRecord(
            school_id=school, snapshot_id=snapshot, domain=Domain.STUDENTS, index=int(legacy_id.split("-")[1]),
            legacy_id=legacy_id, source_ts=ts,
            record={"id": legacy_id, "name": name, "email": f"{legacy_id}@x", "status": "active",
                    "joinDate": "2024-01-01", "dateOfBirth": "2010-01-01"},
        )
    )  # fmt: skip
    assert isinstance(out, MappedRecord)
    return out


async def checksum(pool: asyncpg.Pool, school: str) -> str:
    return await pool.fetchval(
        """
        SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
          SELECT concat_ws(',', u.id, u.name, u.email, s.id, s.status, s.source_snapshot_id) AS t
            FROM students s JOIN users u ON u.id = s.user_id WHERE s.school_id = $1) x
        """,
        school,
    )


async def test_redelivery_and_reordering_give_the_same_state(pool: asyncpg.Pool) -> None:
    writer = Writer(pool)
    t1, t2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    batch = [mapped("it-w1", f"student-{i}", f"Name {i}", t1) for i in range(50)]
    newer = [mapped("it-w1", f"student-{i}", f"Renamed {i}", t2, "snap-2") for i in range(0, 50, 5)]
    await writer.load(batch + newer)
    clean = await checksum(pool, "it-w1")

    for records in ([*reversed(batch), *newer], newer + batch, batch[:20] + newer + batch[20:] + batch):
        await pool.execute("DELETE FROM students WHERE school_id = 'it-w1'; DELETE FROM users WHERE school_id = 'it-w1'")
        await pool.execute("DELETE FROM migration.loaded_records WHERE school_id = 'it-w1'")
        await writer.load(records)
        assert await checksum(pool, "it-w1") == clean

    # An older write after a newer one never overwrites it (last writer wins, by source time).
    await writer.load(batch)
    assert await checksum(pool, "it-w1") == clean
    assert await pool.fetchval("SELECT name FROM users WHERE school_id = 'it-w1' AND legacy_id = 'student-5'") == "Renamed 5"
    ledger = await pool.fetchval("SELECT snapshot_id FROM migration.loaded_records WHERE school_id = 'it-w1' AND legacy_id = 'student-5'")
    assert ledger == "snap-2"


async def test_a_poison_row_is_quarantined_and_the_rest_of_its_batch_lands(pool: asyncpg.Pool) -> None:
    writer = Writer(pool)
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    batch = [mapped("it-w2", f"student-{i}", f"Name {i}", ts) for i in range(10)]
    clash = mapped("it-w2", "student-99", "Clash", ts)
    clash.rows[0].values["email"] = "student-3@x"  # the same email as another student of the school
    refused = await writer.load([*batch, clash])
    assert [(r.legacy_id, r.reason) for r in refused] == [("student-99", "db_uniqueviolation")]
    assert refused[0].payload["name"] == "Clash" and refused[0].payload["id"] == "student-99"
    assert await pool.fetchval("SELECT count(*) FROM students WHERE school_id = 'it-w2'") == 10
    assert await pool.fetchval("SELECT count(*) FROM migration.quarantine WHERE school_id = 'it-w2'") == 1


async def test_migrations_from_several_replicas_at_once_apply_once(postgres: EmbeddedPostgres) -> None:
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute("DROP DATABASE IF EXISTS it_migrations")
    await admin.execute("CREATE DATABASE it_migrations")
    await admin.close()
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/it_migrations"
    applied = await asyncio.gather(*(apply_migrations(dsn) for _ in range(4)))
    names = [name for batch in applied for name in batch]
    assert sorted(names) == [name for _, name, _ in migration_files()]
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT count(*) FROM migration.schema_version") == len(migration_files())
    await conn.close()


async def test_a_payload_jsonb_cannot_hold_is_quarantined_exactly_as_bytes(pool: asyncpg.Pool) -> None:
    import json

    from shared.messages import QuarantinedRecord, Stage

    payload = {"id": "student-\x00", "notes": "nul \x00 inside", "list": [1, "ж"]}
    record = QuarantinedRecord(
        school_id="it-w3", snapshot_id="snap-1", domain=Domain.STUDENTS, index=3, legacy_id="student-\x00",
        stage=Stage.LOADER, reason="db_untranslatablecharacter", message="22P05: unsupported Unicode escape", payload=payload,
    )  # fmt: skip
    await Writer(pool).quarantine([record])
    row = await pool.fetchrow("SELECT legacy_id, payload, payload_bytes FROM migration.quarantine WHERE school_id = 'it-w3'")
    assert row["payload"] is None and json.loads(bytes(row["payload_bytes"])) == payload
    assert row["legacy_id"] == "student-\\u0000"
