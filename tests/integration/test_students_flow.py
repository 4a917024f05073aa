"""One school's students through the real pipeline: broker, five service processes, PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from schoolmig.stack import Stack
from shared.platform.settings import Settings
from tests.integration.conftest import localstorage_dump, migrate

pytestmark = pytest.mark.integration

NS = uuid.UUID("18acb45e-3f32-5ccf-96fe-d0fc35c83e7a")

STUDENTS = [
    {
        "id": "student-1",
        "name": "Ана Петровска",
        "email": "ana@example.mk",
        "phone": "070123456",
        "classId": "class-1",
        "status": "active",
        "joinDate": "2024-01-15T00:00:00.000Z",
        "parentContact": "Sarah Johnson - +1-555-0201",
        "dateOfBirth": "2010-03-12",
        "academicInfo": {"level": "B1", "gpa": "3,8", "enrollmentDate": "2024-01-10"},
        "paymentDue": 1200,
        "address": "'; DROP TABLE students; --",
    },
    {
        "id": "student-2",
        "name": "Marko",
        "email": "marko@example.mk",
        "status": "inactive",
        "joinDate": "15.01.2024",
        "parentContact": "+389 70 111 222",
        "dateOfBirth": "2011-05-01",
    },
    {"id": "student-3", "name": "No Birthday", "email": "nb@example.mk", "status": "active", "joinDate": "2024-01-15"},
    {
        "id": "student-1",
        "name": "Duplicate of the first",
        "email": "dup@example.mk",
        "status": "active",
        "joinDate": "2024-01-15",
        "dateOfBirth": "2010-01-01",
    },
    {
        "id": "student-4",
        "name": "Same Email",
        "email": "ana@example.mk",
        "status": "active",
        "joinDate": "2024-01-15",
        "dateOfBirth": "2010-01-01",
    },
    "not an object",
    {
        "id": "student-5",
        "name": "Orphan",
        "email": "o@example.mk",
        "status": "active",
        "joinDate": "2024-01-15",
        "dateOfBirth": "2010-01-01",
        "classId": "class-404",
    },
]

# What student-1's classId points at; class-404 is nowhere.
CLASS_WORLD = {
    "teachers": [
        {"id": "teacher-1", "name": "Теа", "email": "teacher@example.mk", "subject": "English", "joinDate": "2020-01-01"}
    ],
    "classrooms": [{"id": "classroom-1", "name": "Room 1"}],
    "classes": [{"id": "class-1", "name": "English", "level": "B1", "teacher": {"id": "teacher-1"}, "roomId": "classroom-1"}],
}


def rid(school: str, table: str, key: str) -> uuid.UUID:
    return uuid.uuid5(NS, f"{school}/{table}/{key}")


async def test_students_reach_postgres_and_every_record_is_accounted_for(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-students"
    report = await migrate(
        settings,
        pool,
        school,
        localstorage_dump(students=STUDENTS, theme="dark", grades='[{"id": "g', **CLASS_WORLD),
        override_audit="the grades value is cut short in the browser too: migrate the rest",
    )

    students = report["domains"]["students"]
    assert students == {"source": 7, "loaded": 2, "quarantined": 5}
    assert report["domains"]["grades"] == {"source": 1, "loaded": 0, "quarantined": 1}  # the value cut short
    for counts in report["domains"].values():
        assert counts["source"] == counts["loaded"] + counts["quarantined"]
    reasons = {(q["domain"], q["legacy_id"], q["reason"]) for q in report["quarantine"]}
    assert reasons == {
        ("students", "student-3", "missing_required"),
        ("students", "student-1", "duplicate_id"),
        ("students", "student-4", "duplicate_email"),  # decided at ingest, whatever the arrival order
        ("students", "student-5", "orphaned_reference"),  # its class never arrives
        ("students", None, "not_an_object"),
        ("grades", None, "invalid_json"),
    }
    assert report["phase"] == "validated" and report["validation_ok"]

    row = await pool.fetchrow(
        "SELECT s.*, u.email, u.name, u.role, u.is_active FROM students s JOIN users u ON u.id = s.user_id"
        " WHERE s.school_id = $1 AND s.legacy_id = $2",
        school,
        "student-1",
    )
    assert row["id"] == rid(school, "students", "student-1")
    assert row["user_id"] == rid(school, "users", "student:student-1")
    assert row["class_id"] == rid(school, "classes", "class-1")
    assert (row["name"], row["role"], row["is_active"]) == ("Ана Петровска", "student", True)
    assert (row["parent_name"], row["parent_phone"]) == ("Sarah Johnson", "+1-555-0201")
    assert str(row["gpa"]) == "3.80"
    assert row["address"] == "'; DROP TABLE students; --"
    assert row["extras"]["record"]["unmapped"] == {"paymentDue": 1200}
    assert row["extras"]["record"]["source"]["joinDate"] == "2024-01-15T00:00:00.000Z"

    second = await pool.fetchrow("SELECT * FROM students WHERE school_id = $1 AND legacy_id = 'student-2'", school)
    assert (second["parent_name"], second["parent_phone"], second["status"]) == (None, "+389 70 111 222", "inactive")
    assert second["join_date"].isoformat() == "2024-01-15"

    stored = await pool.fetchrow(
        "SELECT payload, message FROM migration.quarantine WHERE school_id = $1 AND legacy_id = 'student-4'", school
    )
    assert stored["payload"] == STUDENTS[4]  # the source record exactly as the browser held it
    assert stored["message"] == "the same email as students/student-1, which keeps it"


async def test_the_same_school_id_space_is_separate_per_school(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    content = localstorage_dump(students=[STUDENTS[0]], **CLASS_WORLD)
    await migrate(settings, pool, "it-school-x", content)
    await migrate(settings, pool, "it-school-y", content)
    ids = {r["id"] for r in await pool.fetch("SELECT id FROM students WHERE school_id IN ('it-school-x', 'it-school-y')")}
    assert ids == {rid("it-school-x", "students", "student-1"), rid("it-school-y", "students", "student-1")}


async def test_mockdata_export_format_migrates(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    import json

    export = {
        "students": [STUDENTS[1]],
        "obligations": [{"id": "obligation-1"}],
        "lastUpdated": "2024-05-01T00:00:00.000Z",
        "version": "1.0.0",
    }
    from datetime import UTC, datetime

    read = datetime(2024, 5, 20, 9, tzinfo=UTC)
    report = await migrate(settings, pool, "it-export", json.dumps(export).encode(), taken_at=read)
    assert report["domains"]["students"] == {"source": 1, "loaded": 1, "quarantined": 0}
    assert report["domains"]["payment_obligations"] == {"source": 1, "loaded": 0, "quarantined": 1}  # no studentId
    ts = await pool.fetchval("SELECT source_ts FROM students WHERE school_id = 'it-export'")
    assert ts == read  # when it was read; the export's own lastUpdated is kept beside it, never the order
    kept = await pool.fetchval("SELECT manifest->>'app_last_updated' FROM migration.snapshots WHERE school_id = 'it-export'")
    assert datetime.fromisoformat(kept) == datetime(2024, 5, 1, tzinfo=UTC)
