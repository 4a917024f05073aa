"""The validator catches what it should: each kind of defect, planted directly in
PostgreSQL after a clean migration, is found with the right type and record id; a clean
migration reports no issue at all."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from schoolmig.demo import school_dump
from schoolmig.stack import Stack
from services.validator.run import validate_school
from shared.platform.settings import Settings
from shared.wire.messages import Severity, ValidationCompleted
from tests.integration.conftest import cli, migrate

pytestmark = pytest.mark.integration


def issues_of(result: ValidationCompleted) -> set[tuple[str, str, str | None]]:
    return {(i.type, d.domain.value, i.record_id) for d in result.domains for i in d.issues}


async def test_a_clean_migration_has_no_issue_and_every_planted_defect_is_found(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-validate"
    report = await migrate(settings, pool, school, json.dumps(school_dump(4, seed=3, messy=False)).encode(), timeout_s=120)
    assert report["phase"] == "validated"
    snapshot = report["snapshot_id"]
    assert all(c["quarantined"] == 0 for c in report["domains"].values()), report["quarantine"][:5]

    clean = await validate_school(pool, school, snapshot, "run-clean")
    assert clean.ok
    assert issues_of(clean) == set()
    assert all(d.valid_records == d.total_records for d in clean.domains)
    assert sum(d.total_records for d in clean.domains) == sum(c["source"] for c in report["domains"].values())

    def one(sql: str) -> Any:
        return pool.fetchval(sql, school)

    grade = await one("SELECT legacy_id FROM grades WHERE school_id = $1 ORDER BY legacy_id LIMIT 1")
    student = await one("SELECT legacy_id FROM students WHERE school_id = $1 ORDER BY legacy_id LIMIT 1")
    payment = await one("SELECT legacy_id FROM payments WHERE school_id = $1 ORDER BY legacy_id LIMIT 1")
    obligation = await one(
        "SELECT legacy_id FROM payment_obligations WHERE school_id = $1 AND status <> 'overdue' ORDER BY legacy_id LIMIT 1"
    )
    # The defects, planted behind the pipeline's back (foreign keys off, as a bad restore would).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("DELETE FROM grades WHERE school_id = $1 AND legacy_id = $2", school, grade)
        await conn.execute(
            "UPDATE users SET name = 'Someone Else' WHERE school_id = $1 AND legacy_id = $2 AND role = 'student'",
            school,
            student,
        )
        await conn.execute(
            "INSERT INTO classrooms (id, school_id, legacy_id, extras, name, source_snapshot_id, source_ts)"
            " VALUES ($1, $2, 'classroom-extra', '{}', 'Annex', 'by-hand', now())",
            uuid.uuid4(),
            school,
        )
        await conn.execute(
            "UPDATE payments SET obligation_id = $3 WHERE school_id = $1 AND legacy_id = $2", school, payment, uuid.uuid4()
        )
        await conn.execute(
            "UPDATE payment_obligations SET status = 'overdue' WHERE school_id = $1 AND legacy_id = $2", school, obligation
        )

    result = await validate_school(pool, school, snapshot, "run-defects")
    found = issues_of(result)
    assert not result.ok
    planted = {
        ("missing_record", "grades", grade),
        ("data_mismatch", "students", student),
        ("unexpected_record", "classrooms", "classroom-extra"),
        ("orphaned_reference", "payments", payment),
        ("data_mismatch", "payments", payment),
        ("status_mismatch", "payment_obligations", obligation),
    }
    assert found == planted  # each defect found with its type and record id, and nothing else
    by_type = {(i.type, i.record_id): i for d in result.domains for i in d.issues}
    renamed = by_type[("data_mismatch", student)]
    assert [f.field for f in renamed.fields] == ["name"]  # in the school's terms, via the reverse mapping
    assert renamed.fields[0].database == "Someone Else"
    status = by_type[("status_mismatch", obligation)]
    assert status.severity is Severity.CRITICAL and status.fields[0].database == "overdue"
    published = result.for_publishing()
    assert "Someone Else" not in published.model_dump_json()

    # The same run from the command line, for machines.
    shown = await asyncio.to_thread(cli, settings, "validate", "--school", school, "--json", timeout_s=120)
    assert shown.returncode == 1, shown.stderr
    from_cli = ValidationCompleted.model_validate_json(shown.stdout)
    assert issues_of(from_cli) == found
    assert await pool.fetchval("SELECT count(*) FROM migration.validation_runs WHERE school_id = $1 AND ok = false", school) >= 1
    table = await asyncio.to_thread(cli, settings, "validate", "--school", school, timeout_s=120)
    assert "status_mismatch" in table.stdout and "FAILED" in table.stdout
