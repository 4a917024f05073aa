"""Each domain's mapping rules, one by one (students have their own file)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from shared.catalog.domains import Domain
from shared.mapping import Mapped, Rejected, map_record
from shared.mapping.common import parse_timestamp

NS = uuid.UUID("18acb45e-3f32-5ccf-96fe-d0fc35c83e7a")
TS = "2024-01-15T08:30:00.000Z"


def uid(table: str, key: str) -> str:
    return str(uuid.uuid5(NS, f"school-a/{table}/{key}"))


def rows(domain: Domain, record: dict[str, Any], hints: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    result = map_record(domain, "school-a", record["id"], record, hints, zone=UTC)
    assert isinstance(result, Mapped), result
    return result.rows


def reason(domain: Domain, record: dict[str, Any], hints: dict[str, str] | None = None) -> str:
    result = map_record(domain, "school-a", record["id"], record, hints, zone=UTC)
    assert isinstance(result, Rejected), result
    return result.reason


def teacher(**kw: Any) -> dict[str, Any]:
    return {
        "id": "teacher-1",
        "name": "Теа",
        "email": "t@x",
        "subject": "English",
        "joinDate": "2020-09-01",
        "classIds": ["class-1"],
        "bio": "…",
        "createdAt": TS,
        **kw,
    }


def test_teacher_is_a_user_and_a_teacher() -> None:
    (users_table, user), (teachers_table, t) = rows(Domain.TEACHERS, teacher(status="inactive"))
    assert (users_table, teachers_table) == ("users", "teachers")
    assert user["id"] == uid("users", "teacher:teacher-1") == t["user_id"]
    assert t["id"] == uid("teachers", "teacher-1")
    assert (user["role"], user["is_active"], t["is_active"]) == ("teacher", False, False)
    assert t["created_at"] == "2024-01-15T08:30:00+00:00"
    assert t["extras"]["record"]["unmapped"] == {"classIds": ["class-1"], "bio": "…", "status": "inactive"}
    assert reason(Domain.TEACHERS, teacher(subject="")) == "missing_required"


def classroom(**kw: Any) -> dict[str, Any]:
    return {"id": "classroom-1", "name": "Room 101", "location": "Floor 1", "capacity": 20, "createdDate": TS, **kw}


def test_classroom_rules() -> None:
    [(_, room)] = rows(Domain.CLASSROOMS, classroom(capacity="30"))
    assert (room["capacity"], room["is_active"], room["created_at"]) == (30, True, "2024-01-15T08:30:00+00:00")
    assert reason(Domain.CLASSROOMS, classroom(capacity=0)) == "out_of_range"
    assert reason(Domain.CLASSROOMS, classroom(capacity=2.5)) == "too_precise"
    assert reason(Domain.CLASSROOMS, classroom(capacity=2**31)) == "out_of_range"  # beyond the INT column
    assert reason(Domain.CLASSROOMS, classroom(capacity=10**40)) == "out_of_range"  # beyond the decimal context too
    assert reason(Domain.CLASSES, klass(maxStudents=str(2**31))) == "out_of_range"
    assert reason(Domain.CLASSROOMS, classroom(name="x" * 101)) == "value_too_long"


def klass(**kw: Any) -> dict[str, Any]:
    return {
        "id": "class-1",
        "name": "English B1",
        "level": "B1",
        "teacher": {"id": "teacher-1", "name": "Теа"},
        "room": "Room 101",
        "roomId": "classroom-1",
        "maxStudents": 12,
        "studentIds": ["student-1"],
        "students": 1,
        "schedule": [
            {"day": "Monday", "startTime": "09:00", "endTime": "10:30"},
            {"day": "sunday", "startTime": "9:00", "endTime": "10:30"},
        ],
        **kw,
    }


def test_class_and_its_schedule_slots() -> None:
    out = rows(Domain.CLASSES, klass())
    (_, c), slots = out[0], [v for t, v in out[1:] if t == "class_schedules"]
    assert c["teacher_id"] == uid("teachers", "teacher-1") and c["classroom_id"] == uid("classrooms", "classroom-1")
    assert (c["status"], c["max_students"]) == ("active", 12)
    assert [(s["id"], s["day_of_week"], s["start_time"], s["class_id"]) for s in slots] == [
        (uid("class_schedules", "class-1#0"), 1, "09:00:00", c["id"]),
        (uid("class_schedules", "class-1#1"), 7, "09:00:00", c["id"]),
    ]
    record_extras = c["extras"]["record"]
    assert "schedule" not in record_extras.get("source", {})  # rebuilt slot by slot, not kept whole
    assert slots[1]["extras"]["item"]["source"] == {"day": "sunday", "startTime": "9:00"}


def test_class_without_room_id_uses_the_ingest_hint_or_is_quarantined() -> None:
    no_room_id = {k: v for k, v in klass().items() if k != "roomId"}
    [(_, c), *_] = rows(Domain.CLASSES, no_room_id, {"classroom_id": "classroom-7"})
    assert c["classroom_id"] == uid("classrooms", "classroom-7")
    assert reason(Domain.CLASSES, no_room_id) == "unresolved_classroom"
    assert (
        reason(Domain.CLASSES, klass(schedule=[{"day": "Monday", "startTime": "10:00", "endTime": "09:00"}]))
        == "invalid_time_range"
    )
    assert reason(Domain.CLASSES, klass(schedule=[{"day": "Funday", "startTime": "9:00", "endTime": "10:00"}])) == "invalid_enum"
    assert reason(Domain.CLASSES, klass(schedule=[{"day": "Monday", "startTime": "25:00", "endTime": "26:00"}])) == "invalid_time"
    assert reason(Domain.CLASSES, klass(schedule="Mondays")) == "invalid_type"


def test_obligations_and_payments() -> None:
    obligation = {
        "id": "obligation-s1-0",
        "studentId": "student-1",
        "studentName": "Ана",
        "type": "Tuition Fee",
        "amount": "850",
        "dueDate": "2024-02-01",
        "period": "Spring 2024",
        "status": "partial",
    }
    [(_, o)] = rows(Domain.PAYMENT_OBLIGATIONS, obligation)
    assert (o["student_id"], o["amount"], o["status"]) == (uid("students", "student-1"), "850", "partial")
    assert o["extras"]["record"]["unmapped"] == {"studentName": "Ана"}
    assert reason(Domain.PAYMENT_OBLIGATIONS, {**obligation, "amount": 0}) == "out_of_range"
    assert reason(Domain.PAYMENT_OBLIGATIONS, {**obligation, "status": "cancelled"}) == "invalid_enum"
    payment = {
        "id": "payment-1",
        "obligationId": "obligation-s1-0",
        "studentId": "student-1",
        "amount": 425.5,
        "date": "2024-02-03",
        "method": "Card",
        "createdBy": "admin",
    }
    [(_, p)] = rows(Domain.PAYMENTS, payment)
    assert (p["obligation_id"], p["amount"], p["method"]) == (uid("payment_obligations", "obligation-s1-0"), "425.5", "card")
    assert p["extras"]["record"]["unmapped"] == {"studentId": "student-1", "createdBy": "admin"}
    assert reason(Domain.PAYMENTS, {**payment, "method": "crypto"}) == "invalid_enum"


def session(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "attendance-1",
        "classId": "class-1",
        "className": "English",
        "teacherId": "teacher-1",
        "sessionDate": "2024-03-01",
        "createdAt": TS,
        "studentRecords": entries,
    }


def test_attendance_session_becomes_one_row_per_student() -> None:
    out = rows(
        Domain.ATTENDANCE,
        session(
            [
                {"studentId": "student-1", "studentName": "Ана", "status": "present", "homeworkCompleted": True},
                {"studentId": "student-2", "studentName": "Марко", "status": "Late", "notes": "bus"},
            ]
        ),
    )
    assert [(v["id"], v["student_id"], v["status"], v["homework_completed"]) for _, v in out] == [
        (uid("attendance_records", "attendance-1:student-1"), uid("students", "student-1"), "present", True),
        (uid("attendance_records", "attendance-1:student-2"), uid("students", "student-2"), "late", None),
    ]
    assert {v["legacy_id"] for _, v in out} == {"attendance-1"}
    assert all(v["class_id"] == uid("classes", "class-1") and v["date"] == "2024-03-01" for _, v in out)
    first, second = out[0][1]["extras"], out[1][1]["extras"]
    assert "studentRecords" not in first["record"].get("source", {})  # each entry's leftovers stay on its own row
    assert first["item"]["unmapped"] == {"studentName": "Ана"} and "record" not in second
    assert reason(Domain.ATTENDANCE, session([])) == "empty_session"
    twice = [{"studentId": "student-1", "status": "present"}, {"studentId": "student-1", "status": "absent"}]
    assert reason(Domain.ATTENDANCE, session(twice)) == "duplicate_student"


def test_assessment_types_are_normalised_and_others_kept_not_forced() -> None:
    base = {"id": "assessment-1", "classId": "class-1", "title": "Unit 1", "date": "2024-03-01", "totalPoints": "100"}
    [(_, a)] = rows(Domain.ASSESSMENTS, {**base, "type": "Homework"})
    assert (a["type"], a["total_points"]) == ("homework", "100")
    [(_, other)] = rows(Domain.ASSESSMENTS, {**base, "type": "Oral exam"})
    assert other["type"] is None and other["extras"]["record"]["source"]["type"] == "Oral exam"


def test_grades_keep_their_value_as_text() -> None:
    base = {"id": "grade-1", "assessmentId": "assessment-1", "studentId": "student-1", "dateRecorded": "2024-03-02"}
    assert rows(Domain.GRADES, {**base, "value": 90})[0][1]["value"] == "90"
    assert rows(Domain.GRADES, {**base, "value": " B+ "})[0][1]["value"] == "B+"
    assert reason(Domain.GRADES, {**base, "value": "excellent work"}) == "value_too_long"
    assert reason(Domain.GRADES, {**base, "value": ""}) == "missing_required"


def test_private_lesson_with_its_obligation_and_payments() -> None:
    lesson = {
        "id": "lesson-1",
        "studentId": "student-1",
        "teacherId": "teacher-1",
        "classroomId": "classroom-1",
        "subject": "Piano",
        "date": "2024-03-05",
        "startTime": "16:00",
        "endTime": "17:00",
        "status": "completed",
        "paymentObligation": {"id": "plo-1", "amount": 600, "dueDate": "2024-03-05", "status": "partial"},
        "paymentRecords": [
            {"id": "plp-1", "amount": 300, "paymentDate": "2024-03-05", "method": "cash"},
            {"id": "plp-2", "amount": "150", "paymentDate": "2024-03-06", "method": "card"},
        ],
    }
    out = rows(Domain.PRIVATE_LESSONS, lesson)
    assert [t for t, _ in out] == [
        "private_lessons",
        "private_lesson_payment_obligations",
        "private_lesson_payments",
        "private_lesson_payments",
    ]
    lesson_row = out[0][1]
    assert lesson_row["teacher_id"] == uid("teachers", "teacher-1") and lesson_row["start_time"] == "16:00:00"
    assert out[1][1]["id"] == uid("private_lesson_payment_obligations", "lesson-1:obligation")
    assert [v["id"] for _, v in out[2:]] == [
        uid("private_lesson_payments", "lesson-1:payment:0"),
        uid("private_lesson_payments", "lesson-1:payment:1"),
    ]
    assert all(v["lesson_id"] == lesson_row["id"] for _, v in out[1:])
    assert out[2][1]["extras"]["item"]["unmapped"] == {"id": "plp-1"}
    assert reason(Domain.PRIVATE_LESSONS, {**lesson, "endTime": "15:00"}) == "invalid_time_range"
    assert reason(Domain.PRIVATE_LESSONS, {**lesson, "classroomId": None}) == "missing_required"


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
@example(datetime(1, 1, 1), timezone(timedelta(hours=14)))  # found by the hostile-input test: UTC year 0
@example(datetime(9999, 12, 31, 23), timezone(timedelta(hours=-5)))
def test_a_bookkeeping_timestamp_is_read_or_left_unread_and_never_breaks_the_mapping(moment: datetime, offset: timezone) -> None:
    """``createdAt``-like values at the ends of the calendar (year 1 with ``+14:00``): read as
    the same instant, or unreadable (None: the column keeps its default, the original its
    extras); the mapping and its rebuild never raise."""
    text = moment.replace(tzinfo=offset).isoformat()
    parsed = parse_timestamp(text)
    if parsed is not None:
        assert datetime.fromisoformat(parsed) == moment.replace(tzinfo=offset)
    record = {"id": "r1", "name": "Room", "location": "Floor 1", "capacity": 8, "createdDate": text}
    map_record(Domain.CLASSROOMS, "s", "r1", record, None, datetime(2024, 1, 1, tzinfo=UTC), zone="UTC")  # never raises
