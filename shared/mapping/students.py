"""Student -> ``users`` (role student) + ``students``.

Ids: ``users`` key ``student:<id>``; ``students`` key ``<id>``; ``class_id`` is the
``classes`` id of ``classId``. Column rules are in the README's mapping table.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.mapping.common import (
    out_date,
    out_number,
    present,
    put,
    ref,
    rid,
    sub_object,
)
from shared.mapping.engine import Context, DomainMapping, Row
from shared.mapping.parsing import (
    Reject,
    enum,
    numeric_max,
    parse_bool,
    parse_date,
    parse_decimal,
    split_contact,
    text,
)

STATUSES = frozenset({"active", "inactive"})
DISCOUNT_TYPES = frozenset({"relatives", "social_case", "single_parent", "free_of_charge"})


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    user_id = rid(school_id, "users", f"student:{legacy_id}")
    status = enum(record.get("status"), "status", STATUSES, required=True)
    join_date = parse_date(record.get("joinDate"), "joinDate", zone=ctx.zone, required=True)
    date_of_birth = parse_date(record.get("dateOfBirth"), "dateOfBirth", zone=ctx.zone, required=True)
    assert join_date is not None and date_of_birth is not None
    parent_name, parent_phone = split_contact(record.get("parentContact"), "parentContact")
    if parent_name and len(parent_name) > 255:
        raise Reject("value_too_long", "'parentContact' name part is longer than 255 characters")
    if parent_phone and len(parent_phone) > 20:
        raise Reject("value_too_long", "'parentContact' phone part is longer than 20 characters")
    emergency = sub_object(record.get("emergencyContact"), "emergencyContact")
    academic = sub_object(record.get("academicInfo"), "academicInfo")
    gpa = parse_decimal(academic.get("gpa"), "academicInfo.gpa", minimum=Decimal(0), maximum=Decimal(4), scale=2)
    enrollment = parse_date(academic.get("enrollmentDate"), "academicInfo.enrollmentDate", zone=ctx.zone) or join_date
    discount_amount = parse_decimal(
        record.get("discountAmount"), "discountAmount", minimum=Decimal(0), maximum=numeric_max(10, 2), scale=2
    )
    user = {
        "id": user_id,
        "legacy_id": legacy_id,
        "email": text(record.get("email"), "email", max_len=255, required=True),
        "name": text(record.get("name"), "name", max_len=255, required=True),
        "avatar_url": text(record.get("avatar"), "avatar"),
        "role": "student",
        "is_active": status == "active",
    }
    student = {
        "id": rid(school_id, "students", legacy_id),
        "legacy_id": legacy_id,
        "user_id": user_id,
        "phone": text(record.get("phone"), "phone", max_len=20),
        "class_id": ref(school_id, "classes", record.get("classId"), "classId"),
        "status": status,
        "join_date": join_date.isoformat(),
        "date_of_birth": date_of_birth.isoformat(),
        "place_of_birth": text(record.get("placeOfBirth"), "placeOfBirth", max_len=255),
        "address": text(record.get("address"), "address"),
        "parent_name": parent_name,
        "parent_email": text(record.get("parentEmail"), "parentEmail", max_len=255),
        "parent_phone": parent_phone,
        "emergency_contact_name": text(emergency.get("name"), "emergencyContact.name", max_len=255),
        "emergency_contact_relationship": text(emergency.get("relationship"), "emergencyContact.relationship", max_len=100),
        "emergency_contact_phone": text(emergency.get("phone"), "emergencyContact.phone", max_len=20),
        "academic_level": text(academic.get("level"), "academicInfo.level", max_len=50),
        "gpa": str(gpa) if gpa is not None else None,
        "enrollment_date": enrollment.isoformat(),
        "has_discount": bool(parse_bool(record.get("hasDiscount"), "hasDiscount")),
        "discount_type": enum(record.get("discountType"), "discountType", DISCOUNT_TYPES),
        "discount_amount": str(discount_amount) if discount_amount is not None else None,
    }
    return [("users", user), ("students", student)]


def render(rows: list[Row]) -> dict[str, Any]:
    user = next(v for t, v in rows if t == "users")
    s = next(v for t, v in rows if t == "students")
    out: dict[str, Any] = {"id": s["legacy_id"], "status": s["status"], "hasDiscount": s["has_discount"]}
    out.update(
        present(
            ("name", user["name"]),
            ("email", user["email"]),
            ("avatar", user["avatar_url"]),
            ("phone", s["phone"]),
            ("joinDate", out_date(s["join_date"])),
            ("dateOfBirth", out_date(s["date_of_birth"])),
            ("placeOfBirth", s["place_of_birth"]),
            ("address", s["address"]),
            ("parentEmail", s["parent_email"]),
            ("discountType", s["discount_type"]),
            ("discountAmount", out_number(s["discount_amount"])),
        )
    )
    contact = " - ".join(p for p in (s["parent_name"], s["parent_phone"]) if p)
    put(out, "parentContact", contact or None)
    emergency: dict[str, Any] = {}
    put(emergency, "name", s["emergency_contact_name"])
    put(emergency, "relationship", s["emergency_contact_relationship"])
    put(emergency, "phone", s["emergency_contact_phone"])
    put(out, "emergencyContact", emergency or None)
    academic: dict[str, Any] = {}
    put(academic, "level", s["academic_level"])
    put(academic, "gpa", out_number(s["gpa"]))
    put(academic, "enrollmentDate", out_date(s["enrollment_date"]))
    put(out, "academicInfo", academic or None)
    return out


MAPPING = DomainMapping(
    primary_table="students",
    handled=frozenset(
        {
            "id",
            "name",
            "email",
            "avatar",
            "phone",
            "classId",
            "status",
            "joinDate",
            "dateOfBirth",
            "placeOfBirth",
            "address",
            "parentContact",
            "parentEmail",
            "emergencyContact",
            "academicInfo",
            "hasDiscount",
            "discountType",
            "discountAmount",
        }
    ),
    forward=forward,
    render=render,
)
