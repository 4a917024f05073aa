import json

from services.ingest.audit import audit_snapshot, summarise
from shared.catalog.domains import Domain
from shared.source.snapshot import parse_snapshot
from shared.wire.messages import Severity, SnapshotFormat

D = Domain


def snapshot(**keys: object) -> list:
    content = json.dumps({k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in keys.items()}).encode()
    return audit_snapshot(parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP))


CLEAN = dict(
    students=[{"id": "s1", "name": "Ана", "email": "ana@x", "classId": "c1"}],
    teachers=[{"id": "t1", "name": "Teo", "email": "teo@x", "classIds": ["c1"]}],
    classrooms=[{"id": "r1", "name": "Room 1"}],
    classes=[
        {
            "id": "c1",
            "name": "English",
            "teacher": {"id": "t1", "name": "Teo"},
            "roomId": "r1",
            "room": "Room 1",
            "students": 1,
            "studentIds": ["s1"],
        }
    ],
    paymentObligations=[{"id": "o1", "studentId": "s1", "studentName": "Ана"}],
    payments=[{"id": "p1", "obligationId": "o1", "studentId": "s1", "studentName": "Ана"}],
    **{
        "attendance-records": [
            {
                "id": "a1",
                "classId": "c1",
                "className": "English",
                "teacherId": "t1",
                "teacherName": "Teo",
                "studentRecords": [{"studentId": "s1", "studentName": "Ана", "status": "present"}],
            }
        ]
    },
    assessments=[{"id": "as1", "classId": "c1", "className": "English"}],
    grades=[{"id": "g1", "assessmentId": "as1", "studentId": "s1", "studentName": "Ана"}],
    privateLessons=[
        {
            "id": "l1",
            "studentId": "s1",
            "teacherId": "t1",
            "classroomId": "r1",
            "studentName": "Ана",
            "teacherName": "Teo",
            "classroomName": "Room 1",
        }
    ],
)


def found(findings: list, kind: str) -> set[tuple]:
    return {(f.domain, f.record_id, f.field, f.ref_id) for f in findings if f.type == kind}


def test_a_consistent_school_has_no_findings() -> None:
    assert snapshot(**CLEAN) == []


def test_every_reference_field_is_checked_for_orphans() -> None:
    broken = json.loads(json.dumps(CLEAN))
    broken["students"][0]["classId"] = "c9"
    broken["teachers"][0]["classIds"] = ["c1", "c8"]
    broken["classes"][0].update({"teacher": {"id": "t9"}, "roomId": "r9", "studentIds": ["s1", "s9"], "students": 2})
    broken["paymentObligations"][0]["studentId"] = "s8"
    broken["payments"][0].update({"obligationId": "o9", "studentId": "s7"})
    broken["attendance-records"][0].update({"classId": "c7", "teacherId": "t7", "studentRecords": [{"studentId": "s6"}]})
    broken["assessments"][0]["classId"] = "c6"
    broken["grades"][0].update({"assessmentId": "as9", "studentId": "s5"})
    broken["privateLessons"][0].update({"studentId": "s4", "teacherId": "t4", "classroomId": "r4"})
    orphans = found(snapshot(**broken), "orphaned_reference")
    assert orphans == {
        (D.STUDENTS, "s1", "classId", "c9"),
        (D.TEACHERS, "t1", "classIds[]", "c8"),
        (D.CLASSES, "c1", "teacher.id", "t9"),
        (D.CLASSES, "c1", "roomId", "r9"),
        (D.CLASSES, "c1", "studentIds[]", "s9"),
        (D.PAYMENT_OBLIGATIONS, "o1", "studentId", "s8"),
        (D.PAYMENTS, "p1", "obligationId", "o9"),
        (D.PAYMENTS, "p1", "studentId", "s7"),
        (D.ATTENDANCE, "a1", "classId", "c7"),
        (D.ATTENDANCE, "a1", "teacherId", "t7"),
        (D.ATTENDANCE, "a1", "studentRecords[].studentId", "s6"),
        (D.ASSESSMENTS, "as1", "classId", "c6"),
        (D.GRADES, "g1", "assessmentId", "as9"),
        (D.GRADES, "g1", "studentId", "s5"),
        (D.PRIVATE_LESSONS, "l1", "studentId", "s4"),
        (D.PRIVATE_LESSONS, "l1", "teacherId", "t4"),
        (D.PRIVATE_LESSONS, "l1", "classroomId", "r4"),
    }


def test_a_class_without_room_id_is_resolved_by_room_name() -> None:
    by_name = json.loads(json.dumps(CLEAN))
    del by_name["classes"][0]["roomId"]
    assert found(snapshot(**by_name), "orphaned_reference") == set()
    by_name["classes"][0]["room"] = "Room 404"
    assert found(snapshot(**by_name), "orphaned_reference") == {(D.CLASSES, "c1", "room", None)}


def test_denormalised_names_that_disagree_are_reported_by_id_only() -> None:
    renamed = json.loads(json.dumps(CLEAN))
    renamed["students"][0]["name"] = "Ана Петровска"
    renamed["teachers"][0]["name"] = "Teodor"
    findings = snapshot(**renamed)
    mismatches = found(findings, "name_mismatch")
    assert (D.PAYMENTS, "p1", "studentName", "s1") in mismatches
    assert (D.ATTENDANCE, "a1", "studentRecords[].studentName", "s1") in mismatches
    assert (D.CLASSES, "c1", "teacher.name", "t1") in mismatches
    assert (D.PRIVATE_LESSONS, "l1", "teacherName", "t1") in mismatches
    assert len(mismatches) == 8  # 5 copies of the student's name, 3 of the teacher's
    assert all(f.severity is Severity.INFO for f in findings)
    assert "Петровска" not in json.dumps([f.as_json() for f in findings], ensure_ascii=False)


def test_same_email_on_two_people_names_both_without_the_email() -> None:
    shared = json.loads(json.dumps(CLEAN))
    shared["teachers"][0]["email"] = " ANA@x "
    findings = [f for f in snapshot(**shared) if f.type == "shared_email"]
    assert {(f.domain, f.record_id) for f in findings} == {(D.STUDENTS, "s1"), (D.TEACHERS, "t1")}
    assert all("ana@x" not in f.detail.lower() for f in findings)


def test_counts_and_memberships_that_disagree() -> None:
    odd = json.loads(json.dumps(CLEAN))
    odd["classes"][0]["students"] = 5
    odd["students"][0]["classId"] = ""
    findings = snapshot(**odd)
    assert found(findings, "count_mismatch") == {(D.CLASSES, "c1", "students", None)}
    assert found(findings, "membership_mismatch") == {(D.STUDENTS, "s1", "classId", "c1")}


def test_corruption_duplicates_and_unreadable_values() -> None:
    messy = json.loads(json.dumps(CLEAN))
    messy["students"] = messy["students"] + ["junk", {"name": "no id"}, dict(messy["students"][0])]
    findings = snapshot(**{**messy, "grades": '[{"id": "g1"'})
    kinds = summarise(findings)
    assert kinds["corrupted_entry"] == 2 and kinds["duplicate_id"] == 1 and kinds["unreadable_value"] == 1
    [unreadable] = [f for f in findings if f.type == "unreadable_value"]
    assert (unreadable.domain, unreadable.severity) == (D.GRADES, Severity.CRITICAL)
