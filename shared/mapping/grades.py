"""Grade -> ``grades`` (key ``<id>``). ``value`` is text (``90`` -> ``"90"``, ``"B+"`` as is),
at most 10 characters."""

from __future__ import annotations

from typing import Any

from shared.mapping.common import out_date, put, ref, rid
from shared.mapping.engine import Context, DomainMapping, Row
from shared.mapping.parsing import parse_date, text


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    return [
        (
            "grades",
            {
                "id": rid(school_id, "grades", legacy_id),
                "legacy_id": legacy_id,
                "assessment_id": ref(school_id, "assessments", record.get("assessmentId"), "assessmentId", required=True),
                "student_id": ref(school_id, "students", record.get("studentId"), "studentId", required=True),
                "value": text(record.get("value"), "value", max_len=10, required=True),
                "comments": text(record.get("comments"), "comments"),
                "date_recorded": str(d) if (d := parse_date(record.get("dateRecorded"), "dateRecorded", zone=ctx.zone)) else None,
            },
        )
    ]


def render(rows: list[Row]) -> dict[str, Any]:
    r = rows[0][1]
    out: dict[str, Any] = {"id": r["legacy_id"], "value": r["value"]}
    put(out, "comments", r["comments"])
    put(out, "dateRecorded", out_date(r["date_recorded"]))
    return out


MAPPING = DomainMapping(
    primary_table="grades",
    handled=frozenset({"id", "assessmentId", "studentId", "value", "comments", "dateRecorded"}),
    forward=forward,
    render=render,
)
