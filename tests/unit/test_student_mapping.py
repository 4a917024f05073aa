import uuid
from datetime import UTC
from typing import Any

import pytest

from shared.catalog.domains import Domain
from shared.mapping import Mapped, Rejected, map_record

NS = uuid.UUID("18acb45e-3f32-5ccf-96fe-d0fc35c83e7a")


def student(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "student-1",
        "name": "Ана Петровска",
        "email": "ana@example.mk",
        "phone": "070123456",
        "classId": "class-3",
        "status": "active",
        "joinDate": "2024-01-15T00:00:00.000Z",
        "parentContact": "Sarah Johnson - +1-555-0201",
        "dateOfBirth": "2010-03-12",
    }
    record.update(overrides)
    return record


def rows(record: dict[str, Any], school: str = "school-a") -> dict[str, dict[str, Any]]:
    result = map_record(Domain.STUDENTS, school, record["id"], record, zone=UTC)
    assert isinstance(result, Mapped), result
    return dict(result.rows)


def rejected(record: dict[str, Any]) -> Rejected:
    result = map_record(Domain.STUDENTS, "school-a", record["id"], record, zone=UTC)
    assert isinstance(result, Rejected), result
    return result


def test_ids_follow_the_target_spec_formula() -> None:
    out = rows(student())
    assert out["students"]["id"] == str(uuid.uuid5(NS, "school-a/students/student-1"))
    assert out["users"]["id"] == str(uuid.uuid5(NS, "school-a/users/student:student-1"))
    assert out["students"]["user_id"] == out["users"]["id"]
    assert out["students"]["class_id"] == str(uuid.uuid5(NS, "school-a/classes/class-3"))


def test_same_id_in_another_school_is_another_row() -> None:
    assert rows(student(), "school-a")["students"]["id"] != rows(student(), "school-b")["students"]["id"]


def test_users_then_students_with_flattened_fields() -> None:
    record = student(
        emergencyContact={"name": "Ivan", "relationship": "uncle", "phone": "071000111"},
        academicInfo={"level": "B1", "gpa": "3,8", "enrollmentDate": "10.01.2024"},
        hasDiscount="true",
        discountType="social_case",
        discountAmount="150.5",
    )
    result = map_record(Domain.STUDENTS, "school-a", "student-1", record, zone=UTC)
    assert isinstance(result, Mapped)
    assert [table for table, _ in result.rows] == ["users", "students"]
    user, s = dict(result.rows)["users"], dict(result.rows)["students"]
    assert (user["role"], user["name"], user["is_active"]) == ("student", "Ана Петровска", True)
    assert (s["parent_name"], s["parent_phone"]) == ("Sarah Johnson", "+1-555-0201")
    assert s["join_date"] == "2024-01-15"
    assert s["enrollment_date"] == "2024-01-10"
    assert s["gpa"] == "3.8"
    assert (s["emergency_contact_name"], s["emergency_contact_relationship"]) == ("Ivan", "uncle")
    assert (s["has_discount"], s["discount_type"], s["discount_amount"]) == (True, "social_case", "150.5")


def test_enrollment_date_falls_back_to_join_date() -> None:
    assert rows(student())["students"]["enrollment_date"] == "2024-01-15"


def test_nothing_lost_unmapped_fields_and_original_forms_go_to_extras() -> None:
    record = student(paymentDue=1200, lastPayment="2024-02-01", joinDate="15.01.2024", academicInfo={"gpa": "3,8"})
    out = rows(record)
    extras = out["students"]["extras"]["record"]
    assert extras["unmapped"] == {"paymentDue": 1200, "lastPayment": "2024-02-01"}
    assert set(extras["source"]) == {"joinDate", "academicInfo", "classId"}
    assert extras["source"]["joinDate"] == "15.01.2024"
    assert extras["source"]["academicInfo"] == {"gpa": "3,8"}
    assert extras["source"]["classId"] == "class-3"  # a reference's source id cannot be rebuilt from its uuid
    assert "parentContact" not in extras["source"]  # rebuilt exactly from the two columns
    assert "hasDiscount" in extras["absent"]  # the column says False; the record never said
    result = map_record(Domain.STUDENTS, "school-a", "student-1", record, zone=UTC)
    assert isinstance(result, Mapped)
    from shared.mapping import reverse_record

    assert reverse_record(Domain.STUDENTS, result.rows) == record


def test_text_that_looks_like_sql_or_html_is_kept_verbatim() -> None:
    out = rows(student(address="'; DROP TABLE students; --", name="<b>Ана</b>"))
    assert out["students"]["address"] == "'; DROP TABLE students; --"
    assert out["users"]["name"] == "<b>Ана</b>"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"dateOfBirth": None}, "missing_required"),
        ({"email": ""}, "missing_required"),
        ({"status": "graduated"}, "invalid_enum"),
        ({"joinDate": "not a date"}, "invalid_date"),
        ({"academicInfo": {"gpa": 7}}, "out_of_range"),
        ({"phone": "+389 70 123 456 ext. 99999"}, "value_too_long"),
        ({"discountType": "vip"}, "invalid_enum"),
        ({"discountAmount": -5}, "out_of_range"),
        ({"academicInfo": "B1"}, "invalid_type"),
    ],
)
def test_values_that_do_not_fit_quarantine_the_record(overrides: dict[str, Any], reason: str) -> None:
    assert rejected(student(**overrides)).reason == reason
