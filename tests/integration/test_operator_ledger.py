"""The SQL behind the operator's views, against the real PostgreSQL: a broker's loss seen by
its high-water marks (and kept until recovered), dead letters noted once, scratch schools
hidden, the clean-up of local copies only when asked and by a device the school knows, and
a school's history in order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import asyncpg

from services.coordinator.store import CoordinatorStore
from services.ingest.store import IngestStore
from shared.failures.deadletters import note_dead_letter
from shared.ledger.overview import overview
from shared.ledger.schools import history, local_copies, mark_scratch, schools
from shared.wire.messages import LocalCleared


async def test_a_loss_is_seen_when_a_mark_goes_back_and_kept_until_recovered(pool: asyncpg.Pool) -> None:
    store, c, e = CoordinatorStore(pool), f"c-{uuid.uuid4().hex[:6]}", f"e-{uuid.uuid4().hex[:6]}"
    assert not await store.broker_loss_pending(c, {(c, 0): 5, (c, 1): 3, (e, 0): 9})  # first look: nothing to compare
    assert not await store.broker_loss_pending(c, {(c, 0): 6, (c, 1): 3, (e, 0): 9})
    assert not await store.broker_loss_pending(c, {(c, 0): 6, (e, 0): 9})  # a partition fewer is no loss
    assert not await store.broker_loss_pending(c, {(c, 0): 6, (c, 1): 0, (e, 0): 9})  # nor one made again, new
    assert await store.broker_loss_pending(c, {(c, 0): 1, (c, 1): 0, (e, 0): 9})  # went back
    assert await store.broker_loss_pending(c, {(c, 0): 2, (c, 1): 0, (e, 0): 9})  # not recovered yet: still due
    await store.broker_recovered(c)
    assert not await store.broker_loss_pending(c, {(c, 0): 2, (c, 1): 0, (e, 0): 9})


async def test_a_dead_letter_is_noted_once_and_a_new_one_at_a_reused_offset_too(pool: asyncpg.Pool) -> None:
    school = f"dl-{uuid.uuid4().hex[:6]}"
    read = SimpleNamespace(topic="t", partition=0, offset=5, key=None, timestamp=1_700_000_000_000)
    for _ in range(2):  # handled twice (redelivered)
        await note_dead_letter(pool, read, "ingest", "invalid_json", school)
    again = SimpleNamespace(topic="t", partition=0, offset=5, key=None, timestamp=1_800_000_000_000)
    await note_dead_letter(pool, again, "ingest", "invalid_json", school)  # the broker's offsets began again
    kept = await pool.fetch("SELECT stage, reason, topic FROM migration.recent_dead_letters WHERE school_id = $1", school)
    assert [tuple(r) for r in kept] == [("ingest", "invalid_json", "t")] * 2
    figures = await overview(pool)
    assert figures["error_summary"]["dead_letters"] >= 2
    assert [d["school_id"] for d in figures["recent_dead_letters"][:2]] == [school, school]


async def test_a_scratch_school_is_not_a_school(pool: asyncpg.Pool) -> None:
    real, scratch = f"s-{uuid.uuid4().hex[:6]}", f"s-{uuid.uuid4().hex[:6]}.verify-0a0b0c0d"
    for school in (real, scratch):
        await pool.execute(
            "INSERT INTO migration.school_phase (school_id, phase, snapshot_id, updated_at) VALUES ($1, 'validated', 'n', now())",
            school,
        )
    await mark_scratch(pool, scratch, "export-1", real)
    listed = {s["school_id"] for s in await schools(pool)}
    assert real in listed and scratch not in listed


async def test_a_device_clears_its_copy_only_when_asked_once_per_announcement(pool: asyncpg.Pool) -> None:
    ingest, school = IngestStore(pool), f"lc-{uuid.uuid4().hex[:6]}"

    def report(client: str, n: int, announced: datetime) -> LocalCleared:
        return LocalCleared(
            school_id=school,
            client_id=client,
            announced_at=announced,
            cleared_at=datetime.now(UTC),
            archived_records=n,
            archive_sha256="a" * 64,
        )

    await pool.execute(
        "INSERT INTO migration.school_modes (school_id, mode, maintenance, reason, updated_at) VALUES ($1, 'api', false, 'r', now())",
        school,
    )
    for client in ("tablet", "office-pc", ""):  # '' : a file published by hand, no device that keeps a copy
        await pool.execute(
            "INSERT INTO migration.changes (school_id, client_id, seq, domain, record_id, op, source_ts, digest)"
            " VALUES ($1, $2, 1, 'students', 's1', 'create', now(), 'd')",
            school,
            client,
        )
    before = datetime.now(UTC)
    assert await ingest.local_cleared(report("tablet", 3, before)) == "not_asked"

    async def announce() -> datetime:
        return await pool.fetchval(
            "UPDATE migration.school_modes SET clear_local = true, updated_at = clock_timestamp() WHERE school_id = $1"
            " RETURNING updated_at",
            school,
        )

    first = await announce()
    assert await ingest.local_cleared(report("stranger", 3, first)) == "unknown_device"
    assert await ingest.local_cleared(report("tablet", 3, before)) == "not_asked"  # an earlier announcement's
    assert await ingest.local_cleared(report("tablet", 3, first)) is None
    assert await ingest.local_cleared(report("tablet", 0, first)) is None  # taken, but the first report stands
    assert await local_copies(pool, school) == {"told_to_clear": True, "cleared": ["tablet"], "holding": ["office-pc"]}
    [entry] = [h for h in await history(pool, school) if h["kind"] == "device"]
    assert entry["actor"] == "tablet" and entry["outcome"].startswith("3 record(s) archived")

    await pool.execute("UPDATE migration.school_modes SET clear_local = false WHERE school_id = $1", school)  # rolled back
    assert (await local_copies(pool, school))["told_to_clear"] is False
    second = await announce()  # another cutover stood its grace period: every device answers again
    assert await local_copies(pool, school) == {"told_to_clear": True, "cleared": [], "holding": ["office-pc", "tablet"]}
    assert await ingest.local_cleared(report("office-pc", 2, second)) is None
    assert (await local_copies(pool, school))["cleared"] == ["office-pc"]


async def test_a_rollback_meanwhile_wins_over_the_grace_periods_clear_local(pool: asyncpg.Pool) -> None:
    from services.coordinator.phases import Phase
    from shared.wire.messages import Mode

    store, school = CoordinatorStore(pool), f"g-{uuid.uuid4().hex[:6]}"
    await pool.execute(
        "INSERT INTO migration.school_phase (school_id, phase, snapshot_id, updated_at) VALUES ($1, 'rolled_back', 'n', now())",
        school,
    )
    await store.set_mode(school, Mode.LOCAL_STORAGE, False, "rolled back")
    told = await store.set_mode(school, Mode.API, False, "grace", clear_local=True, expect=(Phase.COMPLETED, Mode.API))
    assert told is None
    assert (await store.mode_of(school)).mode is Mode.LOCAL_STORAGE  # type: ignore[union-attr]
    await pool.execute("UPDATE migration.school_phase SET phase = 'completed' WHERE school_id = $1", school)
    await store.set_mode(school, Mode.API, False, "cut over")
    assert await store.set_mode(school, Mode.API, False, "grace", clear_local=True, expect=(Phase.COMPLETED, Mode.API))
    assert (await store.mode_of(school)).clear_local  # type: ignore[union-attr]
