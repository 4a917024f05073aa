"""Classroom -> ``classrooms`` (key ``<id>``). ``createdDate``/``lastUpdated`` are its timestamps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.mapping.common import out_timestamp, parse_timestamp, present, rid
from shared.mapping.engine import Context, DomainMapping, Row
from shared.mapping.parsing import INT_MAX, parse_decimal, text


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    capacity = parse_decimal(
        record.get("capacity"), "capacity", minimum=Decimal(0), exclusive_minimum=True, maximum=INT_MAX, scale=0
    )
    status = record.get("status")
    return [
        (
            "classrooms",
            {
                "id": rid(school_id, "classrooms", legacy_id),
                "legacy_id": legacy_id,
                "name": text(record.get("name"), "name", max_len=100, required=True),
                "location": text(record.get("location"), "location", max_len=255),
                "capacity": int(capacity) if capacity is not None else None,
                "is_active": not (isinstance(status, str) and status.strip().lower() == "inactive"),
                "created_at": parse_timestamp(record.get("createdDate")),
                "updated_at": parse_timestamp(record.get("lastUpdated")),
            },
        )
    ]


def render(rows: list[Row]) -> dict[str, Any]:
    r = rows[0][1]
    out: dict[str, Any] = {"id": r["legacy_id"]}
    out.update(
        present(
            ("name", r["name"]),
            ("location", r["location"]),
            ("capacity", r["capacity"]),
            ("createdDate", out_timestamp(r["created_at"])),
            ("lastUpdated", out_timestamp(r["updated_at"])),
        )
    )
    return out


MAPPING = DomainMapping(
    primary_table="classrooms",
    handled=frozenset({"id", "name", "location", "capacity", "createdDate", "lastUpdated"}),
    forward=forward,
    render=render,
)
