"""Teacher -> ``users`` (role teacher, key ``teacher:<id>``) + ``teachers`` (key ``<id>``).

``classIds`` has no column (a class names its teacher); it stays in ``extras``, and the
audit checks it against the classes.
"""

from __future__ import annotations

from typing import Any

from shared.mapping.common import (
    out_date,
    out_timestamp,
    parse_timestamp,
    present,
    rid,
)
from shared.mapping.engine import Context, DomainMapping, Row
from shared.mapping.parsing import parse_date, text

ACTIVE = {"active": True, "inactive": False}


def forward(school_id: str, legacy_id: str, record: dict[str, Any], ctx: Context) -> list[Row]:
    user_id = rid(school_id, "users", f"teacher:{legacy_id}")
    join_date = parse_date(record.get("joinDate"), "joinDate", zone=ctx.zone, required=True)
    assert join_date is not None
    status = record.get("status")
    is_active = ACTIVE.get(status.strip().lower(), True) if isinstance(status, str) else True
    user = {
        "id": user_id,
        "legacy_id": legacy_id,
        "role": "teacher",
        "is_active": is_active,
        "email": text(record.get("email"), "email", max_len=255, required=True),
        "name": text(record.get("name"), "name", max_len=255, required=True),
        "avatar_url": text(record.get("avatar"), "avatar"),
    }
    teacher = {
        "id": rid(school_id, "teachers", legacy_id),
        "legacy_id": legacy_id,
        "user_id": user_id,
        "phone": text(record.get("phone"), "phone", max_len=20),
        "subject": text(record.get("subject"), "subject", max_len=100, required=True),
        "join_date": join_date.isoformat(),
        "notes": text(record.get("notes"), "notes"),
        "is_active": is_active,
        "created_at": parse_timestamp(record.get("createdAt")),
        "updated_at": parse_timestamp(record.get("updatedAt")),
    }
    return [("users", user), ("teachers", teacher)]


def render(rows: list[Row]) -> dict[str, Any]:
    user = next(v for t, v in rows if t == "users")
    t = next(v for tb, v in rows if tb == "teachers")
    out: dict[str, Any] = {"id": t["legacy_id"]}
    out.update(
        present(
            ("name", user["name"]),
            ("email", user["email"]),
            ("avatar", user["avatar_url"]),
            ("phone", t["phone"]),
            ("subject", t["subject"]),
            ("joinDate", out_date(t["join_date"])),
            ("notes", t["notes"]),
            ("createdAt", out_timestamp(t["created_at"])),
            ("updatedAt", out_timestamp(t["updated_at"])),
        )
    )
    return out


MAPPING = DomainMapping(
    primary_table="teachers",
    handled=frozenset({"id", "name", "email", "avatar", "phone", "subject", "joinDate", "notes", "createdAt", "updatedAt"}),
    forward=forward,
    render=render,
)
