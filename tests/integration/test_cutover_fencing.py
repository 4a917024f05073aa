"""The cutover's fencing token on a real PostgreSQL: once another runner claimed an attempt's
next epoch, nothing the old runner writes lands (a step, the clients' mode, a rollback
mark, the end), even if it still believes it holds the lease; and a claim waits for a
write that began before it, so no late write slips in between.

On a database of their own: the session's coordinator would take these made-up attempts up
(and claim them itself) were they in its database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.coordinator.cutover import LeaseLost
from services.coordinator.phases import Phase
from services.coordinator.store import CoordinatorStore
from shared.platform.db import apply_migrations
from shared.platform.embedded import EmbeddedPostgres
from shared.wire.messages import Mode


@pytest.fixture
async def own(postgres: EmbeddedPostgres, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    await pool.execute("DROP DATABASE IF EXISTS it_fencing")
    await pool.execute("CREATE DATABASE it_fencing")
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/it_fencing"
    await apply_migrations(dsn)
    created = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


async def _validated_school(pool: asyncpg.Pool) -> str:
    school_id = f"it-fencing-{uuid.uuid4().hex[:8]}"
    await pool.execute(
        "INSERT INTO migration.school_phase (school_id, phase, snapshot_id) VALUES ($1, $2, $3)",
        school_id,
        Phase.VALIDATED.value,
        "snap-1",
    )
    return school_id


async def test_a_stale_runner_writes_nothing_once_a_newer_epoch_is_claimed(own: asyncpg.Pool) -> None:
    pool = own
    store = CoordinatorStore(pool)
    school_id = await _validated_school(pool)
    begun = await store.begin_cutover(school_id, "ana", "go")
    assert not isinstance(begun, str)
    with pytest.raises(LeaseLost):  # not claimed yet: no write is allowed
        await store.step_done(begun, "maintenance_on")

    old = await store.claim_attempt(begun)
    assert old is not None and old.epoch == 1
    await store.step_done(old, "maintenance_on")
    await store.set_mode(school_id, Mode.HYBRID, True, "held by the first runner", old)

    new = await store.claim_attempt(old)  # another coordinator took the lease and the attempt up
    assert new is not None and new.epoch == 2
    stale_writes = [
        store.step_done(old, "final_sync"),
        store.set_mode(school_id, Mode.API, False, "late write", old),
        store.mark_rolling_back(old, "late rollback"),
        store.end_cutover(old, Phase.ROLLED_BACK, "rolled_back", actor="old", reason="late"),
    ]
    for write in stale_writes:
        with pytest.raises(LeaseLost):
            await write
    row = await pool.fetchrow("SELECT step, status, error FROM migration.cutovers WHERE attempt_id = $1", begun.attempt_id)
    assert (row["step"], row["status"], row["error"]) == ("maintenance_on", "running", None)
    mode = await store.mode_of(school_id)
    assert mode is not None and (mode.mode, mode.maintenance) == (Mode.HYBRID, True)
    assert (await store.phase_of(school_id))[0] is Phase.CUTOVER

    await store.step_done(new, "final_sync")
    assert await store.end_cutover(new, Phase.COMPLETED, "completed", actor="new", reason="every step passed")
    assert (await store.phase_of(school_id))[0] is Phase.COMPLETED
    assert await store.claim_attempt(new) is None  # ended: nobody takes it up again


async def test_a_claim_waits_for_a_write_already_under_way(own: asyncpg.Pool) -> None:
    """The old runner's write holds the attempt's row; the new claim lands after it, never
    between its check and its write."""
    pool = own
    store = CoordinatorStore(pool)
    school_id = await _validated_school(pool)
    begun = await store.begin_cutover(school_id, "ana", "go")
    assert not isinstance(begun, str)
    old = await store.claim_attempt(begun)
    assert old is not None
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.fetchval("SELECT epoch FROM migration.cutovers WHERE attempt_id = $1 FOR UPDATE", old.attempt_id)
        claim = asyncio.create_task(store.claim_attempt(old))
        await asyncio.sleep(0.3)
        assert not claim.done()  # waiting for the row the write holds
        await conn.execute("UPDATE migration.cutovers SET step = 'maintenance_on' WHERE attempt_id = $1", old.attempt_id)
        await transaction.commit()
    new = await claim
    assert new is not None and new.epoch == old.epoch + 1
    with pytest.raises(LeaseLost):
        await store.step_done(old, "final_sync")
