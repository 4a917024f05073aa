"""A school's several browsers through the real stack: every browser's data is kept.

The issue's cases, one school read from two browsers grown from one seed: a student added on
each survives the other's snapshot; an edit on one device and a deletion on the other, the
later wins; a stale copy (the tablet's, or a laptop first read after the office deleted a
seeded student) does not revive what the office deleted; a revert on
one device is a new write and wins. After each snapshot the school validates against the
merged truth (every device's newest snapshot), the live records (what ``schoolmig export``
rebuilds) are the merged truth, and the report lists what the devices disagree on.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schoolmig.export import live_records
from schoolmig.stack import Stack
from shared.catalog.domains import LOCALSTORAGE_KEYS, Domain
from shared.platform.settings import Settings
from tests.integration.conftest import cli, migrate
from tests.integration.test_live_changes import BASE

pytestmark = pytest.mark.integration

KEY_OF = {domain: key for key, domain in LOCALSTORAGE_KEYS.items()}
READ = datetime(2024, 9, 10, 8, tzinfo=UTC)


def browser(students: list[dict[str, Any]]) -> bytes:
    """A browser's localStorage: the seed school with these students."""
    state = {d: copy.deepcopy(records) for d, records in BASE.items()}
    state[Domain.STUDENTS] = students
    return json.dumps({KEY_OF[d]: json.dumps(records, ensure_ascii=False) for d, records in state.items()}).encode()


def student(seed: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(seed), **changes}


async def live_students(pool: asyncpg.Pool, school: str) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): r for r in (await live_records(pool, school)).get(Domain.STUDENTS, [])}


async def test_two_browsers_are_merged_record_by_record(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    school = "it-two-browsers"
    seed = BASE[Domain.STUDENTS]
    s1, s2, s3 = seed[0], seed[1], seed[2]
    office_new = student(s1, id="student-office", email="office@example.org")
    tablet_new = student(s1, id="student-tablet", email="tablet@example.org")

    async def read(device: str, day: float, students: list[dict[str, Any]]) -> dict[str, Any]:
        report = await migrate(settings, pool, school, browser(students), taken_at=READ + timedelta(days=day), device_id=device)
        assert report["phase"] == "validated", report.get("validation")
        return report

    # 1. each browser adds a student of its own: both are kept
    await read("office-pc", 0, [*seed, office_new])
    tablet = await read("tablet-2", 1, [*seed, tablet_new])
    held = await live_students(pool, school)
    assert {"student-office", "student-tablet"} <= held.keys()
    assert "deleted" not in tablet and "device_conflicts" not in tablet

    # 2. the office edits student-2 and deletes student-3; the tablet, later, still holds both as seeded
    # (a stale copy) and edits student-1 itself
    edited = student(s2, address="Office Street 2")
    await read("office-pc", 2, [s1, edited, *seed[3:], office_new])
    tablet_edit = student(s1, address="Tablet Street 1")
    await read("tablet-2", 3, [tablet_edit, s2, s3, *seed[3:], tablet_new])
    # and the director's laptop, first read on day 3.5, never changed anything: the seed as it was
    report = await read("director-laptop", 3.5, list(seed))
    held = await live_students(pool, school)
    assert held[s1["id"]] == tablet_edit  # the tablet's own edit (newer than the seed the office holds)
    assert held[s2["id"]] == edited  # the office's edit beats the tablet's stale seed copy
    assert s3["id"] not in held  # the office's deletion stands: the stale copy does not revive it
    assert {"student-office", "student-tablet"} <= held.keys()
    disagreed = {(c["legacy_id"], c["winner"]) for c in report["device_conflicts"]}
    assert {(s1["id"], "tablet-2"), (s2["id"], "office-pc"), (s3["id"], "deleted")} <= disagreed
    assert ("student-office", "office-pc") not in disagreed  # a record only one device holds is no conflict

    # 3. the tablet edits student-2 on day 5; on day 6 the office reverts its own edit of it to the
    # seed's content (A -> B -> A): a new write on day 6, so it wins over the tablet's
    tablet_s2 = student(s2, address="Tablet Street 2")
    await read("tablet-2", 5, [tablet_edit, tablet_s2, s3, *seed[3:], tablet_new])
    assert (await live_students(pool, school))[s2["id"]] == tablet_s2
    await read("office-pc", 6, [s1, s2, *seed[3:], office_new])
    held = await live_students(pool, school)
    assert held[s2["id"]] == s2
    assert s3["id"] not in held and held[s1["id"]] == tablet_edit

    # status names the school's devices and how many records they disagree on
    status = cli(settings, "status", "--json")
    assert status.returncode == 0, status.stderr
    mine = next(row for row in json.loads(status.stdout) if row["school_id"] == school)
    assert mine["devices"] == ["director-laptop", "office-pc", "tablet-2"]
    assert mine["device_conflicts"] >= 3


async def test_a_school_migrated_before_device_histories_gets_them_from_its_backups(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-devices-upgraded"
    seed = BASE[Domain.STUDENTS]
    office_new = student(seed[0], id="student-office", email="office@example.org")
    first = await migrate(settings, pool, school, browser([*seed, office_new]), taken_at=READ, device_id="office-pc")
    assert first["phase"] == "validated"
    async with pool.acquire() as conn, conn.transaction():  # as an older version left it: no history at all
        for table in ("device_states", "school_contents", "snapshot_derivations"):
            await conn.execute(f"DELETE FROM migration.{table} WHERE school_id = $1", school)
    edited = student(seed[1], address="Tablet Street 9")
    tablet = await migrate(
        settings, pool, school, browser([seed[0], edited, *seed[2:]]), taken_at=READ + timedelta(days=1), device_id="tablet-2"
    )
    assert tablet["phase"] == "validated", tablet.get("validation")
    held = await live_students(pool, school)
    assert "student-office" in held and held[seed[1]["id"]] == edited  # the office's history was derived first
    devices = await pool.fetch("SELECT device_id FROM migration.device_states WHERE school_id = $1 ORDER BY 1", school)
    assert [d["device_id"] for d in devices] == ["office-pc", "tablet-2"]
