"""Assessment -> ``assessments`` (key ``<id>``).

``type`` is normalised to the schema's lower-case values (``Homework`` -> ``homework``).
Any other type (``Oral exam``) is *not* forced into one of them: the column is NULL, the
original type is kept in ``extras``, and the record migrates.
"""

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
from shared.mapping.parsing import numeric_max, parse_date, parse_decimal, text

TYPES = frozenset({"homework", "test", "quiz", "project", "participation"})


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    raw_type = text(record.get("type"), "type")
    points = parse_decimal(
        record.get("totalPoints"), "totalPoints", minimum=Decimal(0), exclusive_minimum=True, maximum=numeric_max(6, 2), scale=2
    )
    return [
        (
            "assessments",
            {
                "id": rid(school_id, "assessments", legacy_id),
                "legacy_id": legacy_id,
                "class_id": ref(school_id, "classes", record.get("classId"), "classId", required=True),
                "title": text(record.get("title"), "title", max_len=255, required=True),
                "type": raw_type.lower() if raw_type and raw_type.lower() in TYPES else None,
                "total_points": str(points) if points is not None else None,
                "date": str(parse_date(record.get("date"), "date", zone=ctx.zone, required=True)),
                "description": text(record.get("description"), "description"),
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
            ("title", r["title"]),
            ("type", r["type"].capitalize() if r["type"] else None),
            ("totalPoints", out_number(r["total_points"])),
            ("date", out_date(r["date"])),
            ("description", r["description"]),
            ("createdAt", out_timestamp(r["created_at"])),
            ("updatedAt", out_timestamp(r["updated_at"])),
        )
    )
    return out


MAPPING = DomainMapping(
    primary_table="assessments",
    handled=frozenset({"id", "classId", "title", "type", "totalPoints", "date", "description", "createdAt", "updatedAt"}),
    forward=forward,
    render=render,
)
