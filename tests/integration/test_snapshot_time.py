"""A snapshot's time is when it was read, and an upload is identified by the reading it is.

The issue's case 2, through the real stack: the app's ``lastUpdated`` only moves when
MockDataService saves, so two dumps a week apart can carry the same one; they are ordered
by their read times, never by their ids' hashes. The same file again (an operator
re-running ``schoolmig migrate``) is the same snapshot and exits 0; the same content read
later is reported unchanged, and migrates nothing again. Two different readings of one
device at one instant are ordered by their ids, and the one left out says why.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schoolmig.demo import school_dump
from schoolmig.runner import wait_for_report
from schoolmig.sdk import build_envelopes
from schoolmig.stack import Stack
from shared.platform.settings import Settings
from tests.integration.conftest import cli, migrate

pytestmark = pytest.mark.integration
LAST_UPDATED = "2024-09-01T08:00:00.000Z"  # what every dump here says: the app's saves never moved it


def dump_with(students_added: int, seed: int = 3) -> dict[str, Any]:
    """A realistic dump whose ``mockDataMetadata.lastUpdated`` stays put while records are added
    (the app's grade and attendance slices write without touching it)."""
    dump = school_dump(1, seed, messy=False)
    dump["mockDataMetadata"] = json.dumps({"lastUpdated": LAST_UPDATED, "version": "1.0.0"})
    students = json.loads(dump["students"])
    for i in range(students_added):
        students.append({**students[0], "id": f"student-added-{i}", "email": f"added-{i}@example.org"})
    dump["students"] = json.dumps(students)
    return dump


async def loaded_ids(pool: asyncpg.Pool, school: str) -> set[str]:
    rows = await pool.fetch("SELECT legacy_id FROM migration.loaded_records WHERE school_id = $1 AND domain = 'students'", school)
    return {r["legacy_id"] for r in rows}


async def test_a_week_later_dump_with_the_same_last_updated_is_the_newer_one(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    """The later reading is the newer snapshot, whatever its id's hash (the one here sorts
    below the first's): its new record migrates and it validates; the app's lastUpdated is
    kept as metadata only."""
    read = datetime(2024, 9, 2, 9, tzinfo=UTC)
    week = read + timedelta(days=7)
    contents = [json.dumps(dump_with(n)).encode() for n in (0, 1)]
    school = next(
        f"it-readtime-{salt}"
        for salt in range(1000)
        if build_envelopes(contents[1], f"it-readtime-{salt}", taken_at=week)[0].snapshot_id[24:]
        < build_envelopes(contents[0], f"it-readtime-{salt}", taken_at=read)[0].snapshot_id[24:]
    )
    first = await migrate(settings, pool, school, contents[0], taken_at=read)
    assert first["phase"] == "validated", first.get("phase")
    later = await migrate(settings, pool, school, contents[1], taken_at=week)
    assert later["phase"] == "validated" and "superseded" not in later, later.get("superseded")
    assert "student-added-0" in await loaded_ids(pool, school)
    kept = await pool.fetchval(
        "SELECT manifest->>'app_last_updated' FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2",
        school,
        later["snapshot_id"],
    )
    assert datetime.fromisoformat(kept) == datetime.fromisoformat(LAST_UPDATED.replace("Z", "+00:00"))


async def test_the_same_file_again_is_the_same_snapshot_and_the_same_content_later_is_unchanged(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    school = "it-rerun"
    data = tmp_path / "office.json"
    data.write_text(json.dumps(dump_with(0)))
    mtime = datetime(2024, 9, 3, 7, 30, tzinfo=UTC)
    os.utime(data, (mtime.timestamp(), mtime.timestamp()))

    runs = [cli(settings, "migrate", str(data), "--school", school, "--json", timeout_s=180) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"read at {mtime.isoformat()} (the file's modification time)" in run.stderr, run.stderr[-2000:]
        assert "the school's unnamed device" in run.stderr
    reports = [json.loads(r.stdout)["schools"][0] for r in runs]
    assert reports[0]["snapshot_id"] == reports[1]["snapshot_id"]  # one reading, one snapshot
    assert await pool.fetchval("SELECT count(*) FROM migration.snapshots WHERE school_id = $1", school) == 1
    lines_before = await pool.fetch(
        "SELECT domain, legacy_id, snapshot_id FROM migration.loaded_records WHERE school_id = $1 ORDER BY 1, 2", school
    )

    # The same bytes read again later (the SDK's clock): that snapshot again, nothing new to do.
    again = await migrate(settings, pool, school, data.read_bytes())
    assert again["unchanged_of"] == reports[0]["snapshot_id"] != again["snapshot_id"]
    assert again["phase"] == "validated" and again["accounted"] and again["validation_ok"]
    phase, current = await pool.fetchrow("SELECT phase, snapshot_id FROM migration.school_phase WHERE school_id = $1", school)
    assert (phase, current) == ("validated", reports[0]["snapshot_id"])
    lines_after = await pool.fetch(
        "SELECT domain, legacy_id, snapshot_id FROM migration.loaded_records WHERE school_id = $1 ORDER BY 1, 2", school
    )
    assert lines_after == lines_before  # nothing of it was fanned out
    shown = json.loads(cli(settings, "audit", "--school", school, "--json").stdout)
    assert shown["snapshot_id"] == reports[0]["snapshot_id"]  # the school's newest audited is the one that stands

    # Given a read time, the CLI says so.
    given_time = cli(settings, "publish", str(data), "--school", "it-rerun-given", "--taken-at", "2024-09-04T10:00:00+02:00")
    assert given_time.returncode == 0, given_time.stderr
    published = json.loads(given_time.stdout)
    assert published["taken_at_from"] == "--taken-at"
    assert datetime.fromisoformat(published["taken_at"]) == datetime(2024, 9, 4, 8, tzinfo=UTC)
    naive = cli(settings, "publish", str(data), "--school", "it-rerun-given", "--taken-at", "2024-09-04T10:00:00")
    assert naive.returncode == 2 and "has no offset" in naive.stderr


async def test_two_readings_of_one_device_at_one_instant_are_ordered_by_their_ids(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-tie"
    read = datetime(2024, 9, 5, 12, tzinfo=UTC)
    contents = [json.dumps(dump_with(n)).encode() for n in (1, 2)]
    ids = [build_envelopes(c, school, taken_at=read, device_id="office-pc")[0].snapshot_id for c in contents]
    stands = max(ids)
    # The one that stands goes first, so the other arrives after it, however their hashes fall.
    order = sorted(range(2), key=lambda i: ids[i] != stands)
    first = await migrate(settings, pool, school, contents[order[0]], taken_at=read, device_id="office-pc")
    assert first["snapshot_id"] == stands and first["phase"] == "validated"
    await migrate(settings, pool, school, contents[order[1]], taken_at=read, device_id="office-pc")
    left = await wait_for_report(pool, school, min(ids), time.monotonic() + 60)
    assert left is not None and left["phase"] == "superseded" and left["superseded_by"] == stands
    assert "same instant" in left["superseded"]
    devices = await pool.fetch("SELECT DISTINCT device_id FROM migration.snapshots WHERE school_id = $1", school)
    assert [d["device_id"] for d in devices] == ["office-pc"]
