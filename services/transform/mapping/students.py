"""Student -> ``users`` (role student) + ``students``.

Ids: ``users`` key ``student:<id>``; ``students`` key ``<id>``; ``class_id`` is the
``classes`` id of ``classId``. Column rules are in the README's mapping table.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.transform.mapping.common import Extras, rid
from services.transform.parsing import (
    Reject,
    enum,
    parse_bool,
    parse_date,
    parse_decimal,
    split_contact,
    text,
)

STATUSES = frozenset({"active", "inactive"})
DISCOUNT_TYPES = frozenset({"relatives", "social_case", "single_parent", "free_of_charge"})


def _sub_object(value: Any, field: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise Reject("invalid_type", f"'{field}' is a {type(value).__name__}, expected an object")
    return value


def map_student(school_id: str, legacy_id: str, record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    extras = Extras(record)
    extras.take("id")
    user_id = rid(school_id, "users", f"student:{legacy_id}")
    status = enum(extras.take("status"), "status", STATUSES, required=True)
    extras.keep_original("status", status)

    join_date = parse_date(extras.take("joinDate"), "joinDate", required=True)
    date_of_birth = parse_date(extras.take("dateOfBirth"), "dateOfBirth", required=True)
    assert join_date is not None and date_of_birth is not None
    extras.keep_original("joinDate", join_date.isoformat())
    extras.keep_original("dateOfBirth", date_of_birth.isoformat())

    parent_name, parent_phone = split_contact(extras.take("parentContact"), "parentContact")
    if parent_name and len(parent_name) > 255:
        raise Reject("value_too_long", "'parentContact' name part is longer than 255 characters")
    if parent_phone and len(parent_phone) > 20:
        raise Reject("value_too_long", "'parentContact' phone part is longer than 20 characters")
    extras.keep_original("parentContact", None)  # always rebuilt from the original: the split is lossy

    emergency = _sub_object(extras.take("emergencyContact"), "emergencyContact")
    academic = _sub_object(extras.take("academicInfo"), "academicInfo")
    if emergency:
        extras.keep_original("emergencyContact", None)
    if academic:
        extras.keep_original("academicInfo", None)
    gpa = parse_decimal(academic.get("gpa"), "academicInfo.gpa", minimum=Decimal(0), maximum=Decimal(4), scale=2)
    enrollment = parse_date(academic.get("enrollmentDate"), "academicInfo.enrollmentDate") or join_date

    has_discount = parse_bool(extras.take("hasDiscount"), "hasDiscount")
    extras.keep_original("hasDiscount", has_discount)
    discount_amount = parse_decimal(extras.take("discountAmount"), "discountAmount", minimum=Decimal(0), scale=2)
    if discount_amount is not None:
        extras.keep_original("discountAmount", float(discount_amount) if "." in str(discount_amount) else int(discount_amount))
    discount_type = enum(extras.take("discountType"), "discountType", DISCOUNT_TYPES)
    extras.keep_original("discountType", discount_type)

    class_legacy = text(extras.take("classId"), "classId")
    user = {
        "id": user_id,
        "email": text(extras.take("email"), "email", max_len=255, required=True),
        "name": text(extras.take("name"), "name", max_len=255, required=True),
        "avatar_url": text(extras.take("avatar"), "avatar"),
        "role": "student",
        "is_active": status == "active",
        "extras": {},
    }
    student = {
        "id": rid(school_id, "students", legacy_id),
        "user_id": user_id,
        "phone": text(extras.take("phone"), "phone", max_len=20),
        "class_id": rid(school_id, "classes", class_legacy) if class_legacy else None,
        "status": status,
        "join_date": join_date.isoformat(),
        "date_of_birth": date_of_birth.isoformat(),
        "place_of_birth": text(extras.take("placeOfBirth"), "placeOfBirth", max_len=255),
        "address": text(extras.take("address"), "address"),
        "parent_name": parent_name,
        "parent_email": text(extras.take("parentEmail"), "parentEmail", max_len=255),
        "parent_phone": parent_phone,
        "emergency_contact_name": text(emergency.get("name"), "emergencyContact.name", max_len=255),
        "emergency_contact_relationship": text(
            emergency.get("relationship"), "emergencyContact.relationship", max_len=100
        ),
        "emergency_contact_phone": text(emergency.get("phone"), "emergencyContact.phone", max_len=20),
        "academic_level": text(academic.get("level"), "academicInfo.level", max_len=50),
        "gpa": str(gpa) if gpa is not None else None,
        "enrollment_date": enrollment.isoformat() if enrollment else None,
        "has_discount": bool(has_discount),
        "discount_type": discount_type,
        "discount_amount": str(discount_amount) if discount_amount is not None else None,
    }
    for key in ("name", "email", "phone", "avatar", "placeOfBirth", "address", "parentEmail", "classId"):
        value = record.get(key)
        if isinstance(value, str) and value != value.strip():
            extras.source[key] = value
    student["extras"] = extras.as_json()
    return [("users", user), ("students", student)]
