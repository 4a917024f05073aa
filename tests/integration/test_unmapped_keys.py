"""Data under a key nobody mapped is never left behind in silence (issue 21, case 3): a
domain under another version's key migrates through the default aliases; a key holding
records that no table maps stops the school at the audit gate, and the audit, the report and
`schoolmig audit` name it; an operator's override lets the rest go on, with the reason."""

from __future__ import annotations

import json
import time

import asyncpg
import pytest

from schoolmig.demo import school_dump
from schoolmig.runner import wait_for_report
from schoolmig.stack import Stack
from shared.platform.settings import Settings
from tests.integration.conftest import cli, migrate

pytestmark = pytest.mark.integration


def school(attendance_key: str) -> bytes:
    """A clean demo school whose attendance sits under ``attendance_key``."""
    dump = school_dump(1, seed=11, messy=False)
    dump[attendance_key] = dump.pop("attendance-records")
    return json.dumps(dump, ensure_ascii=False).encode()


def sessions() -> int:
    return len(json.loads(school_dump(1, seed=11, messy=False)["attendance-records"]))


async def test_attendance_under_another_versions_key_migrates_and_validates(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    report = await migrate(settings, pool, "it-key-alias", school("attendanceRecords"))
    assert report["validation_ok"], report
    assert report["domains"]["attendance"]["source"] == report["domains"]["attendance"]["loaded"] == sessions() > 0
    audit = await pool.fetchval("SELECT summary FROM migration.audits WHERE school_id = 'it-key-alias'")
    assert audit["aliased_keys"] == {"attendanceRecords": "attendance"} and audit["critical_findings"] == 0


async def test_records_under_an_unmapped_key_block_the_school_until_an_operator_decides(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    content = school("attendanceLog")
    blocked = await migrate(settings, pool, "it-key-unmapped", content)
    assert blocked["phase"] == "registered" and "1 critical audit finding" in blocked["blocked"], blocked
    audit = await pool.fetchrow("SELECT summary, findings FROM migration.audits WHERE school_id = 'it-key-unmapped'")
    assert audit["summary"]["unmapped_keys"] == {"attendanceLog": sessions()}
    assert audit["summary"]["unknown_keys"] == ["sidebarCollapsed", "theme"]
    [finding] = [f for f in audit["findings"] if f["type"] == "unmapped_data_key"]
    assert finding["severity"] == "critical" and finding["field"] == "attendanceLog"
    shown = cli(settings, "audit", "--school", "it-key-unmapped")
    assert shown.returncode == 0, shown.stderr
    assert "records under an unmapped key" in shown.stdout and "attendanceLog" in shown.stdout

    # The operator decides to leave them behind: the rest migrates, the reason is on record.
    report = await migrate(
        settings,
        pool,
        "it-key-unmapped",
        content,
        override_audit="old UI log, not attendance",
        snapshot_id=blocked["snapshot_id"],
    )
    assert report["validation_ok"] and report["domains"]["attendance"]["source"] == 0, report
    assert (
        await pool.fetchval("SELECT reason FROM migration.audit_overrides WHERE school_id = 'it-key-unmapped'")
        == "old UI log, not attendance"
    )


async def test_an_operator_maps_the_key_for_one_school_and_its_records_migrate(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    """``schoolmig map-key``: signed, refused for a key the waiting snapshot does not hold
    unmapped, and then the snapshot is audited again with the mapping (who, why) and goes on:
    its attendance migrates and validates."""
    content = school("attendanceLog")
    blocked = await migrate(settings, pool, "it-key-mapped", content)
    assert blocked["phase"] == "registered", blocked

    wrong = cli(settings, "map-key", "attendanceLog=attendanz", "--school", "it-key-mapped", "--reason", "typo")
    assert wrong.returncode == 2 and "attendance" in wrong.stderr  # the domains are listed
    other = cli(settings, "map-key", "gradesLog=grades", "--school", "it-key-mapped", "--reason", "not there")
    assert other.returncode == 1 and "refused: snapshot" in other.stderr and "attendanceLog" in other.stderr, other.stderr
    mapped = cli(
        settings, "map-key", "attendanceLog=attendance", "--school", "it-key-mapped", "--reason", "the 2023 front end's key"
    )
    assert mapped.returncode == 0 and "mapping attendanceLog=attendance sent" in mapped.stdout, (
        mapped.stdout + mapped.stderr
    )  # an answer is data

    report = await wait_for_report(
        pool, "it-key-mapped", blocked["snapshot_id"], time.monotonic() + 120, overridden=True
    )  # past the blocked report
    assert report is not None and report["validation_ok"], report
    assert report["domains"]["attendance"]["source"] == report["domains"]["attendance"]["loaded"] == sessions() > 0
    audit = await pool.fetchrow("SELECT summary, findings FROM migration.audits WHERE school_id = 'it-key-mapped'")
    assert audit["summary"]["aliased_keys"] == {"attendanceLog": "attendance"} and audit["summary"]["critical_findings"] == 0
    [recorded] = [f for f in audit["findings"] if f["type"] == "operator_key_mapping"]
    assert recorded["field"] == "attendanceLog" and "the 2023 front end's key" in recorded["detail"]
    assert recorded["detail"].startswith("map-key by it-operator: ")
    assert not await pool.fetchval(
        "SELECT count(*) FROM migration.audit_overrides WHERE school_id = 'it-key-mapped'"
    )  # mapped, not overridden
