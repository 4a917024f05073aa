"""Snapshots name their device; devices are not merged yet, and what that costs is reported.

A school's snapshots are one history whatever browser they were read from: the newest is
the school's truth. So the issue's case 1 (two browsers, each adding a student of its own)
still soft-deletes the first browser's student when the second's later snapshot arrives;
what this test holds is that it is never silent: the report lists every deleted record a
snapshot of another device last held, with both devices.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schoolmig.demo import school_dump
from schoolmig.stack import Stack
from shared.settings import Settings
from tests.integration.conftest import migrate

pytestmark = pytest.mark.integration


def browser_dump(extra_student: str) -> dict[str, Any]:
    dump = school_dump(1, 4, messy=False)  # every browser grew from the same seed
    students = json.loads(dump["students"])
    students.append({**students[0], "id": extra_student, "email": f"{extra_student}@example.org"})
    dump["students"] = json.dumps(students)
    return dump


async def test_a_snapshot_of_one_device_lists_what_it_deleted_that_another_device_held(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-two-browsers"
    read = datetime(2024, 9, 10, 8, tzinfo=UTC)
    office = await migrate(
        settings, pool, school, json.dumps(browser_dump("student-office")).encode(), taken_at=read, device_id="office-pc"
    )
    assert office["phase"] == "validated" and "deleted_held_by_other_devices" not in office
    tablet = await migrate(
        settings,
        pool,
        school,
        json.dumps(browser_dump("student-tablet")).encode(),
        taken_at=read + timedelta(days=1),
        device_id="tablet-2",
    )
    assert tablet["phase"] == "validated", tablet.get("validation")
    listed = tablet["deleted_held_by_other_devices"]
    assert {
        "domain": "students",
        "legacy_id": "student-office",
        "held_by": "office-pc",
        "deleted_by": "tablet-2",
    }.items() <= next(e for e in listed if e["legacy_id"] == "student-office").items()
    assert all(e["held_by"] == "office-pc" and e["deleted_by"] == "tablet-2" for e in listed)
    devices = await pool.fetch(
        "SELECT snapshot_id, device_id FROM migration.snapshots WHERE school_id = $1 ORDER BY taken_at", school
    )
    assert [d["device_id"] for d in devices] == ["office-pc", "tablet-2"]
    assert tablet["snapshot_id"] == devices[1]["snapshot_id"]
