"""Attendance session -> one ``attendance_records`` row per ``studentRecords`` entry
(key ``<session id>:<student id>``; every row's ``legacy_id`` is the session's id).

The session's own fields ride on its first row. A session with no entries has no row to
hold it, and a student listed twice would be two rows for one (student, class, date):
both are quarantined (``empty_session``, ``duplicate_student``), never dropped.
"""

from __future__ import annotations

from typing import Any

from shared.mapping.common import (
    object_list,
    out_date,
    out_timestamp,
    parse_timestamp,
    put,
    ref,
    rid,
)
from shared.mapping.engine import Child, Context, DomainMapping, Row
from shared.mapping.parsing import Reject, blank, enum, parse_bool, parse_date, text

STATUSES = frozenset({"present", "absent", "late", "excused"})


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    entries = object_list(record.get("studentRecords"), "studentRecords")
    if not entries:
        raise Reject("empty_session", "the session lists no students, so it has no row to live in")
    class_id = ref(school_id, "classes", record.get("classId"), "classId", required=True)
    day = str(parse_date(record.get("sessionDate"), "sessionDate", zone=ctx.zone, required=True))
    created, updated = parse_timestamp(record.get("createdAt")), parse_timestamp(record.get("updatedAt"))
    rows: list[Row] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        student = entry.get("studentId")
        if blank(student) or not isinstance(student, (str, int)) or isinstance(student, bool):
            raise Reject("missing_required", f"'studentRecords[{index}].studentId' is required")
        student_key = str(student).strip()
        if student_key in seen:
            raise Reject("duplicate_student", f"student '{student_key}' is listed twice in this session")
        seen.add(student_key)
        rows.append(
            (
                "attendance_records",
                {
                    "id": rid(school_id, "attendance_records", f"{legacy_id}:{student_key}"),
                    "legacy_id": legacy_id,
                    "student_id": rid(school_id, "students", student_key),
                    "class_id": class_id,
                    "date": day,
                    "status": enum(entry.get("status"), f"studentRecords[{index}].status", STATUSES, required=True),
                    "homework_completed": parse_bool(
                        entry.get("homeworkCompleted"), f"studentRecords[{index}].homeworkCompleted"
                    ),
                    "notes": text(entry.get("notes"), f"studentRecords[{index}].notes"),
                    "created_at": created,
                    "updated_at": updated,
                },
            )
        )
    return rows


def render(rows: list[Row]) -> dict[str, Any]:
    first = min((v for _, v in rows), key=lambda v: v.get("extras", {}).get("entry", 0))
    out: dict[str, Any] = {"id": first["legacy_id"]}
    put(out, "sessionDate", out_date(first["date"]))
    put(out, "createdAt", out_timestamp(first["created_at"]))
    put(out, "updatedAt", out_timestamp(first["updated_at"]))
    return out


def render_entry(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"status": r["status"]}
    put(out, "homeworkCompleted", r["homework_completed"])
    put(out, "notes", r["notes"])
    return out


MAPPING = DomainMapping(
    primary_table="attendance_records",
    handled=frozenset({"id", "classId", "sessionDate", "createdAt", "updatedAt"}),
    forward=forward,
    render=render,
    children=(
        Child(
            "studentRecords", "attendance_records", frozenset({"studentId", "status", "homeworkCompleted", "notes"}), render_entry
        ),
    ),
)
