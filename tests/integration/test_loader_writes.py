"""The loader's write path against real PostgreSQL: redelivery, reordering, last writer wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from services.loader.writer import Writer
from services.transform.records import transform
from shared.catalog.domains import Domain
from shared.platform.db import apply_migrations, migration_files
from shared.platform.embedded import EmbeddedPostgres
from shared.wire.messages import MappedRecord, RawRecord

pytestmark = pytest.mark.integration


def mapped(school: str, legacy_id: str, name: str, ts: datetime, snapshot: str = "snap-1") -> MappedRecord:
    out = transform(
        RawRecord(
            school_id=school,
            snapshot_id=snapshot,
            domain=Domain.STUDENTS,
            index=int(legacy_id.split("-")[1]),
            legacy_id=legacy_id,
            source_ts=ts,
            record={
                "id": legacy_id,
                "name": name,
                "email": f"{legacy_id}@x",
                "status": "active",
                "joinDate": "2024-01-01",
                "dateOfBirth": "2010-01-01",
            },
        )
    )
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
    ledger = await pool.fetchval(
        "SELECT snapshot_id FROM migration.loaded_records WHERE school_id = 'it-w1' AND legacy_id = 'student-5'"
    )
    assert ledger == "snap-2"


async def test_a_poison_row_is_quarantined_and_the_rest_of_its_batch_lands(pool: asyncpg.Pool) -> None:
    writer = Writer(pool)
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    batch = [mapped("it-w2", f"student-{i}", f"Name {i}", ts) for i in range(10)]
    poison = mapped("it-w2", "student-99", "Poison", ts)
    next(r for r in poison.rows if r.table == "students").values["gpa"] = "42"  # past the column's precision
    refused = await writer.load([*batch, poison])
    assert [(r.legacy_id, r.reason) for r in refused] == [("student-99", "db_numericvalueoutofrange")]
    assert refused[0].payload["name"] == "Poison" and refused[0].payload["id"] == "student-99"
    assert await pool.fetchval("SELECT count(*) FROM students WHERE school_id = 'it-w2'") == 10
    assert await pool.fetchval("SELECT count(*) FROM migration.quarantine WHERE school_id = 'it-w2'") == 1


async def test_a_write_taking_a_held_unique_value_waits_for_it_and_lands_when_it_is_let_go(pool: asyncpg.Pool) -> None:
    writer = Writer(pool)
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    await writer.load([mapped("it-w3", f"student-{i}", f"Name {i}", ts) for i in range(3)])
    taker = mapped("it-w3", "student-7", "Taker", datetime(2024, 1, 2, tzinfo=UTC), "snap-2")
    taker.rows[0].values["email"] = "student-1@x"  # student-1 still has it
    assert await writer.load([taker]) == []  # not refused: it waits
    parked = "SELECT count(*) FROM migration.parked_records WHERE school_id = 'it-w3'"
    assert await pool.fetchval(parked) == 1
    assert await pool.fetchval("SELECT count(*) FROM users WHERE school_id = 'it-w3' AND email = 'student-1@x'") == 1
    giver = mapped("it-w3", "student-1", "Name 1", datetime(2024, 1, 3, tzinfo=UTC), "snap-3")
    giver.rows[0].values["email"] = "elsewhere@x"
    assert await writer.load([giver]) == []
    assert await pool.fetchval(parked) == 0
    emails = dict(await pool.fetch("SELECT legacy_id, email FROM users WHERE school_id = 'it-w3' AND deleted_at IS NULL"))
    assert emails == {
        "student-0": "student-0@x",
        "student-1": "elsewhere@x",
        "student-2": "student-2@x",
        "student-7": "student-1@x",
    }


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

    from shared.wire.messages import QuarantinedRecord, Stage

    payload = {"id": "student-\x00", "notes": "nul \x00 inside", "list": [1, "ж"]}
    record = QuarantinedRecord(
        school_id="it-w3",
        snapshot_id="snap-1",
        domain=Domain.STUDENTS,
        index=3,
        legacy_id="student-\x00",
        stage=Stage.LOADER,
        reason="db_untranslatablecharacter",
        message="22P05: unsupported Unicode escape",
        payload=payload,
    )
    await Writer(pool).quarantine([record])
    row = await pool.fetchrow("SELECT legacy_id, payload, payload_bytes FROM migration.quarantine WHERE school_id = 'it-w3'")
    assert row["payload"] is None and json.loads(bytes(row["payload_bytes"])) == payload
    assert row["legacy_id"] == "student-\\u0000"


# ---------------------------------------------------------------------------- order, restarts, statuses


def demo_records(school: str, seed: int = 5) -> list[MappedRecord]:
    """A whole demo school through ingest's fan-out and the transform (quarantined ones left out)."""
    import json as _json

    from schoolmig.demo import school_dump
    from schoolmig.sdk import build_envelopes
    from shared.source.snapshot import parse_snapshot
    from shared.wire.fanout import plan_fanout

    content = _json.dumps(school_dump(1, seed=seed)).encode()
    manifest, _ = build_envelopes(content, school)
    out: list[MappedRecord] = []
    for item in plan_fanout(parse_snapshot(content, manifest.format), manifest):
        if isinstance(item.message, RawRecord) and isinstance(mapped_record := transform(item.message), MappedRecord):
            out.append(mapped_record)
    return out


async def database_checksums(dsn: str) -> dict[str, str]:
    """A checksum of every target table and of the pipeline's ledger, parking and quarantine."""
    from shared.catalog.tables import LOAD_ORDER

    conn = await asyncpg.connect(dsn)
    try:
        sums = {}
        for table in [t.name for t in LOAD_ORDER] + [
            "migration.loaded_records",
            "migration.parked_records",
            "migration.quarantine",
        ]:
            drop = {"loaded_at", "parked_at", "quarantined_at"}  # when it happened, not what
            columns = [
                r["attname"]
                for r in await conn.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    table,
                )
                if r["attname"] not in drop
            ]
            sums[table] = await conn.fetchval(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                f"FROM (SELECT {', '.join(columns)} FROM {table}) t"
            )
        return sums
    finally:
        await conn.close()


async def fresh_database(postgres: EmbeddedPostgres, name: str) -> str:
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    await apply_migrations(dsn)
    return dsn


async def load_in_batches(dsn: str, records: list[MappedRecord], size: int) -> None:
    from shared.platform.db import create_pool

    pool = await create_pool(dsn)
    try:
        writer = Writer(pool)
        for start in range(0, len(records), size):
            await writer.load(records[start : start + size])
    finally:
        await pool.close()


async def test_reordered_and_redelivered_batches_give_the_same_database_as_an_in_order_run(postgres: EmbeddedPostgres) -> None:
    import random

    from shared.catalog.tables import LOAD_ORDER

    records = demo_records("it-order")
    order = {spec.name: i for i, spec in enumerate(LOAD_ORDER)}
    in_order = sorted(records, key=lambda r: order[r.rows[0].table] if r.domain is not Domain.STUDENTS else order["students"])
    clean = await fresh_database(postgres, "it_order_clean")
    await load_in_batches(clean, in_order, 500)
    expected = await database_checksums(clean)
    loaded, parked, refused = (
        int(expected[t].split(":")[0]) for t in ("migration.loaded_records", "migration.parked_records", "migration.quarantine")
    )
    # What stays parked are the children of the demo's quarantined students: orphans in any order.
    assert loaded + parked + refused == len(records) > 3000 and 0 < parked < len(records) // 5 and refused == 0

    shuffled = list(reversed(in_order))  # children first: everything parks, then unparks
    rng = random.Random(7)
    chaos = shuffled[:]
    rng.shuffle(chaos)
    redelivered = chaos + rng.sample(chaos, 400)  # at-least-once: some records twice, out of order
    for name, sequence, size in (("it_order_reversed", shuffled, 300), ("it_order_chaos", redelivered, 137)):
        dsn = await fresh_database(postgres, name)
        await load_in_batches(dsn, sequence, size)
        assert await database_checksums(dsn) == expected, name


async def test_migrated_obligation_statuses_survive_loading_their_payments(pool: asyncpg.Pool) -> None:
    writer = Writer(pool)
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    student = mapped("it-status", "student-1", "Ана", ts)

    def raw(domain: Domain, record: dict) -> MappedRecord:
        out = transform(
            RawRecord(
                school_id="it-status",
                snapshot_id="snap-1",
                domain=domain,
                index=0,
                legacy_id=record["id"],
                source_ts=ts,
                record=record,
            )
        )
        assert isinstance(out, MappedRecord)
        return out

    # The school's truth disagrees with what the payments imply; the school's truth must survive.
    obligations = [
        raw(
            Domain.PAYMENT_OBLIGATIONS,
            {
                "id": f"o-{status}",
                "studentId": "student-1",
                "type": "Tuition",
                "amount": 100,
                "dueDate": "2030-01-01",
                "status": status,
            },
        )
        for status in ("overdue", "pending", "paid")
    ]
    payments = [
        raw(Domain.PAYMENTS, {"id": "p-1", "obligationId": "o-overdue", "amount": 100, "date": "2024-01-02", "method": "cash"}),
        raw(Domain.PAYMENTS, {"id": "p-2", "obligationId": "o-pending", "amount": 40, "date": "2024-01-02", "method": "card"}),
    ]
    await writer.load([student, *obligations])
    await writer.load(payments)
    statuses = dict(await pool.fetch("SELECT legacy_id, status FROM payment_obligations WHERE school_id = 'it-status'"))
    assert statuses == {"o-overdue": "overdue", "o-pending": "pending", "o-paid": "paid"}

    # After cutover the application writes directly: the design's trigger recomputes.
    await pool.execute(
        "INSERT INTO payments (id, school_id, legacy_id, obligation_id, amount, payment_date, method, source_snapshot_id, source_ts)"
        " SELECT gen_random_uuid(), school_id, 'app-1', id, 60, current_date, 'cash', 'app', now()"
        "   FROM payment_obligations WHERE school_id = 'it-status' AND legacy_id = 'o-pending'"
    )
    assert (
        await pool.fetchval("SELECT status FROM payment_obligations WHERE school_id = 'it-status' AND legacy_id = 'o-pending'")
        == "paid"
    )


async def test_a_postgres_crash_mid_load_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL the server in the middle of a load, start it again: the writer's retries
    (1 s, 5 s, 15 s) carry the load through, and the result equals a clean run."""
    from shared.platform.db import create_pool

    # Durable like any production server: the demo server's synchronous_commit=off would
    # acknowledge commits a crash then forgets (this test caught exactly that).
    server = EmbeddedPostgres(data_dir=tmp_path / "crash-data", durable=True).start()
    try:
        clean = await fresh_database(server, "it_crash_clean")
        records = demo_records("it-crash", seed=9)
        await load_in_batches(clean, records, 250)
        expected = await database_checksums(clean)

        target = await fresh_database(server, "it_crash")
        pool = await create_pool(target)
        writer = Writer(pool)
        batches = [records[i : i + 250] for i in range(0, len(records), 250)]
        done = 0
        done_at_crash: list[int] = []

        async def crash_and_restart() -> None:
            while done < 3:  # let a few batches commit first
                await asyncio.sleep(0.01)
            server.kill()
            done_at_crash.append(done)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)

        chaos = asyncio.create_task(crash_and_restart())
        for batch in batches:
            await writer.load(batch)
            done += 1
        await chaos
        await pool.close()
        assert 3 <= done_at_crash[0] < len(batches) - 1  # the server died mid-load
        assert await database_checksums(target) == expected
    finally:
        server.cleanup()


async def test_two_loaders_racing_on_parent_and_child_leave_no_child_parked(postgres: EmbeddedPostgres) -> None:
    """One loader parks children while another commits their parents, over and over: each
    writer takes the school's write lock before it looks, so a park and the write that
    releases it never miss each other (without the lock, children stayed parked for good)."""
    from shared.platform.db import create_pool

    dsn = await fresh_database(postgres, "it_race")
    pools = [await create_pool(dsn, max_size=2) for _ in range(2)]
    try:
        ts = datetime(2024, 1, 1, tzinfo=UTC)

        def raw(domain: Domain, index: int, record: dict) -> MappedRecord:
            out = transform(
                RawRecord(
                    school_id="it-race",
                    snapshot_id="snap-1",
                    domain=domain,
                    index=index,
                    legacy_id=record["id"],
                    source_ts=ts,
                    record=record,
                )
            )
            assert isinstance(out, MappedRecord)
            return out

        for round_ in range(40):
            students = [mapped("it-race", f"student-{round_ * 10 + i}", "Ана", ts) for i in range(10)]
            obligations = [
                raw(
                    Domain.PAYMENT_OBLIGATIONS,
                    round_ * 40 + k,
                    {
                        "id": f"o-{round_}-{k}",
                        "studentId": s.legacy_id,
                        "type": "Tuition",
                        "amount": 100,
                        "dueDate": "2030-01-01",
                        "status": "pending",
                    },
                )
                for k, s in enumerate(students * 4)
            ]
            await asyncio.gather(Writer(pools[0]).load(obligations), Writer(pools[1]).load(students))
        stuck = await pools[0].fetchval("SELECT count(*) FROM migration.parked_records")
        loaded = await pools[0].fetchval("SELECT count(*) FROM payment_obligations")
        assert (stuck, loaded) == (0, 40 * 40)
    finally:
        for p in pools:
            await p.close()


def _raw(school: str, domain: Domain, record: dict, ts: datetime, snapshot: str) -> MappedRecord:
    out = transform(
        RawRecord(
            school_id=school, snapshot_id=snapshot, domain=domain, index=0, legacy_id=record["id"], source_ts=ts, record=record
        )
    )
    assert isinstance(out, MappedRecord), out
    return out


async def test_a_child_an_older_write_has_and_a_newer_one_dropped_stays_dropped_in_either_order(pool: asyncpg.Pool) -> None:
    """Two snapshots (a school no change ever touched) of one class: the newer has one slot,
    the older two. Whichever is written first, the older's second slot is not live, and
    the newer's slot is."""
    t_old, t_new = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)
    slots = [
        {"day": "Monday", "startTime": "9:00", "endTime": "10:00"},
        {"day": "Friday", "startTime": "9:00", "endTime": "10:00"},
    ]
    cls = {"id": "class-1", "name": "Maths", "level": "A1", "teacher": {"id": "teacher-1"}, "roomId": "room-1", "maxStudents": 9}
    outcomes = []
    for n, order in enumerate(("old-first", "new-first")):
        school = f"it-w-slots-{n}"
        writer = Writer(pool)
        parents = [
            _raw(
                school,
                Domain.TEACHERS,
                {"id": "teacher-1", "name": "T", "email": "t@x", "subject": "Maths", "joinDate": "2024-01-01"},
                t_old,
                "s-old",
            ),
            _raw(school, Domain.CLASSROOMS, {"id": "room-1", "name": "Room 1", "capacity": 10}, t_old, "s-old"),
        ]
        assert await writer.load(parents) == []
        old = _raw(school, Domain.CLASSES, {**cls, "schedule": slots}, t_old, "s-old")
        new = _raw(school, Domain.CLASSES, {**cls, "schedule": slots[:1]}, t_new, "s-new")
        for write in ([old], [new]) if order == "old-first" else ([new], [old]):
            assert await writer.load(write) == []
        live = await pool.fetch(
            "SELECT day_of_week, deleted_at IS NULL AS live FROM class_schedules WHERE school_id = $1 ORDER BY day_of_week",
            school,
        )
        outcomes.append([(r["day_of_week"], r["live"]) for r in live if r["live"]])
    assert outcomes[0] == outcomes[1] == [(1, True)]
