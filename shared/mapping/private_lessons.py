"""Private lesson -> ``private_lessons`` (key ``<id>``)
+ ``private_lesson_payment_obligations`` from ``paymentObligation`` (key ``<id>:obligation``)
+ one ``private_lesson_payments`` row per ``paymentRecords`` entry (key ``<id>:payment:<n>``)."""

from __future__ import annotations

from typing import Any

from shared.mapping.common import (
    object_list,
    out_date,
    out_number,
    out_time,
    out_timestamp,
    parse_time,
    parse_timestamp,
    present,
    put,
    ref,
    rid,
    sub_object,
)
from shared.mapping.engine import Child, Context, DomainMapping, Row
from shared.mapping.parsing import Reject, enum, parse_date, parse_decimal, text
from shared.mapping.payment_obligations import POSITIVE
from shared.mapping.payment_obligations import STATUSES as OBLIGATION_STATUSES
from shared.mapping.payments import METHODS

STATUSES = frozenset({"scheduled", "completed", "cancelled"})


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    lesson_id = rid(school_id, "private_lessons", legacy_id)
    start = parse_time(record.get("startTime"), "startTime", required=True)
    end = parse_time(record.get("endTime"), "endTime", required=True)
    assert start and end
    if start >= end:
        raise Reject("invalid_time_range", "the lesson starts at or after it ends")
    rows: list[Row] = [
        (
            "private_lessons",
            {
                "id": lesson_id,
                "legacy_id": legacy_id,
                "student_id": ref(school_id, "students", record.get("studentId"), "studentId", required=True),
                "teacher_id": ref(school_id, "teachers", record.get("teacherId"), "teacherId", required=True),
                "classroom_id": ref(school_id, "classrooms", record.get("classroomId"), "classroomId", required=True),
                "subject": text(record.get("subject"), "subject", max_len=100, required=True),
                "lesson_date": str(parse_date(record.get("date"), "date", zone=ctx.zone, required=True)),
                "start_time": start,
                "end_time": end,
                "status": enum(record.get("status"), "status", STATUSES, required=True),
                "notes": text(record.get("notes"), "notes"),
                "created_at": parse_timestamp(record.get("createdAt")),
                "updated_at": parse_timestamp(record.get("updatedAt")),
            },
        )
    ]
    obligation = sub_object(record.get("paymentObligation"), "paymentObligation")
    if obligation:
        due = parse_date(obligation.get("dueDate"), "paymentObligation.dueDate", zone=ctx.zone)
        rows.append(
            (
                "private_lesson_payment_obligations",
                {
                    "id": rid(school_id, "private_lesson_payment_obligations", f"{legacy_id}:obligation"),
                    "legacy_id": legacy_id,
                    "lesson_id": lesson_id,
                    "amount": str(parse_decimal(obligation.get("amount"), "paymentObligation.amount", required=True, **POSITIVE)),
                    "due_date": str(due) if due else None,
                    "status": enum(obligation.get("status"), "paymentObligation.status", OBLIGATION_STATUSES, required=True),
                    "notes": text(obligation.get("notes"), "paymentObligation.notes"),
                    "created_at": parse_timestamp(obligation.get("createdAt")),
                },
            )
        )
    for index, payment in enumerate(object_list(record.get("paymentRecords"), "paymentRecords")):
        rows.append(
            (
                "private_lesson_payments",
                {
                    "id": rid(school_id, "private_lesson_payments", f"{legacy_id}:payment:{index}"),
                    "legacy_id": legacy_id,
                    "lesson_id": lesson_id,
                    "amount": str(
                        parse_decimal(payment.get("amount"), f"paymentRecords[{index}].amount", required=True, **POSITIVE)
                    ),
                    "payment_date": str(
                        parse_date(
                            payment.get("paymentDate"), f"paymentRecords[{index}].paymentDate", zone=ctx.zone, required=True
                        )
                    ),
                    "method": enum(payment.get("method"), f"paymentRecords[{index}].method", METHODS, required=True),
                    "notes": text(payment.get("notes"), f"paymentRecords[{index}].notes"),
                    "created_at": parse_timestamp(payment.get("createdAt")),
                },
            )
        )
    return rows


def render(rows: list[Row]) -> dict[str, Any]:
    r = next(v for t, v in rows if t == "private_lessons")
    out: dict[str, Any] = {"id": r["legacy_id"], "status": r["status"]}
    out.update(
        present(
            ("subject", r["subject"]),
            ("date", out_date(r["lesson_date"])),
            ("startTime", out_time(r["start_time"])),
            ("endTime", out_time(r["end_time"])),
            ("notes", r["notes"]),
            ("createdAt", out_timestamp(r["created_at"])),
            ("updatedAt", out_timestamp(r["updated_at"])),
        )
    )
    return out


def render_obligation(o: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"amount": out_number(o["amount"]), "status": o["status"]}
    put(out, "dueDate", out_date(o["due_date"]))
    put(out, "notes", o["notes"])
    put(out, "createdAt", out_timestamp(o["created_at"]))
    return out


def render_payment(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"amount": out_number(p["amount"]), "paymentDate": out_date(p["payment_date"]), "method": p["method"]}
    put(out, "notes", p["notes"])
    put(out, "createdAt", out_timestamp(p["created_at"]))
    return out


MAPPING = DomainMapping(
    primary_table="private_lessons",
    handled=frozenset(
        {
            "id",
            "studentId",
            "teacherId",
            "classroomId",
            "subject",
            "date",
            "startTime",
            "endTime",
            "status",
            "notes",
            "createdAt",
            "updatedAt",
        }
    ),
    forward=forward,
    render=render,
    children=(
        Child(
            "paymentObligation",
            "private_lesson_payment_obligations",
            frozenset({"amount", "dueDate", "status", "notes", "createdAt"}),
            render_obligation,
            single=True,
        ),
        Child(
            "paymentRecords",
            "private_lesson_payments",
            frozenset({"amount", "paymentDate", "method", "notes", "createdAt"}),
            render_payment,
        ),
    ),
)
