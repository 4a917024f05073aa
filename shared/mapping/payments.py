"""Payment -> ``payments`` (key ``<id>``). ``studentId``/``studentName`` (copies of the
obligation's student), ``reference`` and ``createdBy`` have no column: kept in ``extras``."""

from __future__ import annotations

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
from shared.mapping.parsing import enum, parse_date, parse_decimal, text
from shared.mapping.payment_obligations import POSITIVE

METHODS = frozenset({"cash", "card", "transfer", "other"})


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    return [
        (
            "payments",
            {
                "id": rid(school_id, "payments", legacy_id),
                "legacy_id": legacy_id,
                "obligation_id": ref(school_id, "payment_obligations", record.get("obligationId"), "obligationId", required=True),
                "amount": str(parse_decimal(record.get("amount"), "amount", required=True, **POSITIVE)),
                "payment_date": str(parse_date(record.get("date"), "date", zone=ctx.zone, required=True)),
                "method": enum(record.get("method"), "method", METHODS, required=True),
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
            ("amount", out_number(r["amount"])),
            ("date", out_date(r["payment_date"])),
            ("method", r["method"]),
            ("notes", r["notes"]),
            ("createdAt", out_timestamp(r["created_at"])),
            ("updatedAt", out_timestamp(r["updated_at"])),
        )
    )
    return out


MAPPING = DomainMapping(
    primary_table="payments",
    handled=frozenset({"id", "obligationId", "amount", "date", "method", "notes", "createdAt", "updatedAt"}),
    forward=forward,
    render=render,
)
