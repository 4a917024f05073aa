"""Payment obligation -> ``payment_obligations`` (key ``<id>``). ``studentName`` is a
denormalised copy: kept in ``extras``, checked by the audit. The migrated ``status`` is the
school's truth and is written as is."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.mapping.common import (
    out_date,
    out_number,
    out_timestamp,
    parse_timestamp,
    present,
    ref,
    rid,
)
from shared.mapping.engine import Context, DomainMapping, Row
from shared.mapping.parsing import enum, numeric_max, parse_date, parse_decimal, text

STATUSES = frozenset({"pending", "partial", "paid", "overdue"})
POSITIVE: dict[str, Any] = {"minimum": Decimal(0), "exclusive_minimum": True, "scale": 2, "maximum": numeric_max(10, 2)}


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    return [
        (
            "payment_obligations",
            {
                "id": rid(school_id, "payment_obligations", legacy_id),
                "legacy_id": legacy_id,
                "student_id": ref(school_id, "students", record.get("studentId"), "studentId", required=True),
                "type": text(record.get("type"), "type", max_len=100, required=True),
                "amount": str(parse_decimal(record.get("amount"), "amount", required=True, **POSITIVE)),
                "due_date": str(parse_date(record.get("dueDate"), "dueDate", zone=ctx.zone, required=True)),
                "period": text(record.get("period"), "period", max_len=50),
                "status": enum(record.get("status"), "status", STATUSES, required=True),
                "notes": text(record.get("notes"), "notes"),
                "created_at": parse_timestamp(record.get("createdAt")),
                "updated_at": parse_timestamp(record.get("updatedAt")),
            },
        )
    ]


def render(rows: list[Row]) -> dict[str, Any]:
    r = rows[0][1]
    out: dict[str, Any] = {"id": r["legacy_id"]}
    out.update(
        present(
            ("type", r["type"]),
            ("amount", out_number(r["amount"])),
            ("dueDate", out_date(r["due_date"])),
            ("period", r["period"]),
            ("status", r["status"]),
            ("notes", r["notes"]),
            ("createdAt", out_timestamp(r["created_at"])),
            ("updatedAt", out_timestamp(r["updated_at"])),
        )
    )
    return out


MAPPING = DomainMapping(
    primary_table="payment_obligations",
    handled=frozenset({"id", "studentId", "type", "amount", "dueDate", "period", "status", "notes", "createdAt", "updatedAt"}),
    forward=forward,
    render=render,
)
