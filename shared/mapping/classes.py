"""Class -> ``classes`` (key ``<id>``) + one ``class_schedules`` row per slot (key ``<id>#<n>``).

Teacher by ``teacher.id``. Classroom by ``roomId``; where an older record lacks it, by
the ingest's hint ``classroom_id`` (the classroom of that school whose name equals
``room``, found over the whole snapshot). No classroom either way: quarantine
``unresolved_classroom`` (the column is NOT NULL). Day names -> 1–7 (Monday = 1).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.mapping.common import (
    object_list,
    out_time,
    out_timestamp,
    parse_time,
    parse_timestamp,
    present,
    ref,
    rid,
    sub_object,
)
from shared.mapping.engine import Child, Context, DomainMapping, Row
from shared.mapping.parsing import INT_MAX, Reject, enum, parse_decimal, text

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
STATUSES = frozenset({"active", "inactive", "completed"})


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    class_id = rid(school_id, "classes", legacy_id)
    teacher = sub_object(record.get("teacher"), "teacher")
    room_legacy = record.get("roomId") if record.get("roomId") not in (None, "") else ctx.hints.get("classroom_id")
    if room_legacy in (None, ""):
        raise Reject("unresolved_classroom", "no roomId, and no classroom of this school is named like 'room'")
    max_students = parse_decimal(
        record.get("maxStudents"), "maxStudents", minimum=Decimal(0), exclusive_minimum=True, maximum=INT_MAX, scale=0
    )
    rows: list[Row] = [
        (
            "classes",
            {
                "id": class_id,
                "legacy_id": legacy_id,
                "name": text(record.get("name"), "name", max_len=255, required=True),
                "description": text(record.get("description"), "description"),
                "level": text(record.get("level"), "level", max_len=50, required=True),
                "teacher_id": ref(school_id, "teachers", teacher.get("id"), "teacher.id", required=True),
                "classroom_id": ref(school_id, "classrooms", room_legacy, "roomId", required=True),
                "max_students": int(max_students) if max_students is not None else None,
                "status": enum(record.get("status"), "status", STATUSES) or "active",
                "created_at": parse_timestamp(record.get("createdAt")),
                "updated_at": parse_timestamp(record.get("updatedAt")),
            },
        )
    ]
    for index, slot in enumerate(object_list(record.get("schedule"), "schedule")):
        day = enum(slot.get("day"), f"schedule[{index}].day", frozenset(DAYS), required=True)
        start = parse_time(slot.get("startTime"), f"schedule[{index}].startTime", required=True)
        end = parse_time(slot.get("endTime"), f"schedule[{index}].endTime", required=True)
        assert day and start and end
        if start >= end:
            raise Reject("invalid_time_range", f"schedule[{index}] starts at or after it ends")
        rows.append(
            (
                "class_schedules",
                {
                    "id": rid(school_id, "class_schedules", f"{legacy_id}#{index}"),
                    "legacy_id": legacy_id,
                    "class_id": class_id,
                    "day_of_week": DAYS.index(day) + 1,
                    "start_time": start,
                    "end_time": end,
                    "is_active": True,
                },
            )
        )
    return rows


def render(rows: list[Row]) -> dict[str, Any]:
    c = next(v for t, v in rows if t == "classes")
    out: dict[str, Any] = {"id": c["legacy_id"], "status": c["status"]}
    out.update(
        present(
            ("name", c["name"]),
            ("description", c["description"]),
            ("level", c["level"]),
            ("maxStudents", c["max_students"]),
            ("createdAt", out_timestamp(c["created_at"])),
            ("updatedAt", out_timestamp(c["updated_at"])),
        )
    )
    return out


def render_slot(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "day": DAYS[int(s["day_of_week"]) - 1].capitalize(),
        "startTime": out_time(s["start_time"]),
        "endTime": out_time(s["end_time"]),
    }


MAPPING = DomainMapping(
    primary_table="classes",
    handled=frozenset({"id", "name", "description", "level", "maxStudents", "status", "createdAt", "updatedAt"}),
    forward=forward,
    render=render,
    children=(Child("schedule", "class_schedules", frozenset({"day", "startTime", "endTime"}), render_slot),),
)
