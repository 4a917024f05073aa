"""Helpers every domain mapping uses: deterministic ids, timestamps and times in, and the
canonical renderings back to source form.

``out_*`` accept both what the forward mapping produced (JSON-ready strings) and what
PostgreSQL returns (``date``, ``time``, ``Decimal``, ``datetime``), so the same render
serves the round-trip test here and the validator's comparison against the database.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from shared.catalog.ids import row_id_text
from shared.mapping.parsing import Reject, blank

rid = row_id_text  # rows carry ids as text


def ref(school_id: str, table: str, value: Any, field: str, *, required: bool = False) -> str | None:
    """The row id of a referenced source id (``classId``, ``teacher.id``, …)."""
    if blank(value):
        if required:
            raise Reject("missing_required", f"'{field}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Reject("invalid_type", f"'{field}' is a {type(value).__name__}, expected an id")
    return rid(school_id, table, str(value).strip())


def sub_object(value: Any, field: str) -> dict[str, Any]:
    if blank(value):
        return {}
    if not isinstance(value, dict):
        raise Reject("invalid_type", f"'{field}' is a {type(value).__name__}, expected an object")
    return value


def object_list(value: Any, field: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise Reject("invalid_type", f"'{field}' must be a list of objects")
    return value


_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def parse_time(value: Any, field: str, *, required: bool = False) -> str | None:
    """``HH:MM`` or ``H:MM`` (``9:00``), optionally with seconds."""
    if blank(value):
        if required:
            raise Reject("missing_required", f"'{field}' is required")
        return None
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if not match or int(match[1]) > 23 or int(match[2]) > 59 or int(match[3] or 0) > 59:
        raise Reject("invalid_time", f"'{field}' is not a time of day: {str(value)[:20]!r}")
    return time(int(match[1]), int(match[2]), int(match[3] or 0)).isoformat()


def parse_timestamp(value: Any) -> str | None:
    """A source ``createdAt``/``updatedAt``, or None when it is missing or unreadable.

    These are bookkeeping, not school data: an unreadable one leaves the column to its
    default (now) and the original is kept in ``extras`` by the engine. Naive times are UTC;
    a moment whose UTC form is off the calendar (year 1 with ``+14:00``) is unreadable.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        parsed.astimezone(UTC)  # year 1 or 9999 pushed off the calendar by its offset: unreadable too
    except (ValueError, OverflowError):
        return None
    return parsed.isoformat()


def out_date(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, date) else str(value)


def out_time(value: Any) -> str | None:
    if value is None:
        return None
    text = value.strftime("%H:%M:%S") if isinstance(value, time) else str(value)
    return text[:5] if text.endswith(":00") and len(text) == 8 else text


def out_timestamp(value: Any) -> str | None:
    """The browser's own form: ``2024-01-15T00:00:00.000Z``."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def out_number(value: Any) -> int | float | None:
    if value is None:
        return None
    number = Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)


def present(*pairs: tuple[str, Any]) -> dict[str, Any]:
    """The pairs that have a value: a NULL column renders as an absent key."""
    return {key: value for key, value in pairs if value is not None}


def put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` only when there is a value: a NULL column renders as an absent key."""
    if value is not None:
        target[key] = value
