"""Records lost in flight (a broker lost with them) come again from the verified backup.

A migrated school's grades vanish from the tables and the ledger, as if the messages that
carried them had been lost with a broker, while the school was still syncing. Nobody does
anything: its counts stop moving, and after ``SCHOOLMIG_REDRIVE_AFTER_S`` the coordinator
has ingest fan the snapshot out again from its verified backup; the school syncs and
validates. An operator's re-drive of a healthy school changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from schoolmig.demo import school_dump
from schoolmig.stack import Stack
from shared.platform.settings import Settings
from tests.integration.conftest import cli, migrate
from tests.integration.test_successive_snapshots import school_rows

SCHOOL = "it-redrive"


async def test_a_school_that_lost_records_in_flight_is_re_driven_from_its_backup(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    report = await migrate(settings, pool, SCHOOL, json.dumps(school_dump(3, seed=5, messy=False)).encode(), timeout_s=120)
    assert report["phase"] == "validated"
    grades = await pool.fetchval(
        "SELECT count(*) FROM migration.loaded_records WHERE school_id = $1 AND domain = 'grades'", SCHOOL
    )
    assert grades > 0

    async with pool.acquire() as conn, conn.transaction():  # lost in flight, while the school still synced
        await conn.execute("DELETE FROM grades WHERE school_id = $1", SCHOOL)
        await conn.execute("DELETE FROM migration.loaded_records WHERE school_id = $1 AND domain = 'grades'", SCHOOL)
        await conn.execute("UPDATE migration.school_phase SET phase = 'dual_write' WHERE school_id = $1", SCHOOL)
    lost_at = time.monotonic()

    deadline = time.monotonic() + settings.redrive_after_s + 90
    phase = None
    while time.monotonic() < deadline:
        phase = await pool.fetchval("SELECT phase FROM migration.school_phase WHERE school_id = $1", SCHOOL)
        if phase == "validated":
            break
        await asyncio.sleep(0.5)
    assert phase == "validated"
    assert time.monotonic() - lost_at >= settings.redrive_after_s  # it waited for the counts to stop moving first
    assert (
        await pool.fetchval("SELECT count(*) FROM migration.loaded_records WHERE school_id = $1 AND domain = 'grades'", SCHOOL)
        == grades
    )
    assert await pool.fetchval("SELECT count(*) FROM grades WHERE school_id = $1", SCHOOL) == grades

    # An operator's re-drive of a healthy school: everything written the same, nothing moves.
    before = await school_rows(pool, SCHOOL)
    done = await asyncio.to_thread(cli, settings, "redrive", "--school", SCHOOL, "--reason", "checking")
    assert done.returncode == 0, done.stderr
    await asyncio.sleep(5)
    assert await pool.fetchval("SELECT phase FROM migration.school_phase WHERE school_id = $1", SCHOOL) == "validated"
    assert await school_rows(pool, SCHOOL) == before
