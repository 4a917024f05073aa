"""Tolerant parsing, strict results.

Accept the shapes real browser data comes in (numbers as strings, ``"3,8"``, other date
formats, surrounding whitespace, empty strings for missing values); refuse anything that
would need a guess. A refusal is a :class:`Reject` with a reason code; the caller
quarantines the record. Nothing is truncated, clamped or guessed.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any


class Reject(Exception):
    """This record cannot be mapped; ``reason`` is a stable code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: Any, field: str, *, max_len: int | None = None, required: bool = False) -> str | None:
    if blank(value):
        if required:
            raise Reject("missing_required", f"'{field}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Reject("invalid_type", f"'{field}' is a {type(value).__name__}, expected text")
    result = str(value).strip()
    if max_len is not None and len(result) > max_len:
        raise Reject("value_too_long", f"'{field}' has {len(result)} characters, the column holds {max_len}")
    return result


_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_DOTTED = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})\.?$")
_SLASHED = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_YMD_SLASHED = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$")


def _make_date(year: str, month: str, day: str, field: str, raw: str) -> date:
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise Reject("invalid_date", f"'{field}' is not a calendar date: {raw!r}") from None


def parse_date(value: Any, field: str, *, zone: tzinfo | None, required: bool = False) -> date | None:
    """A day, from ``YYYY-MM-DD`` (as written), an ISO datetime, ``DD.MM.YYYY``, ``YYYY/MM/DD``,
    or ``DD/MM/YYYY`` when the day/month order is unambiguous. ``03/04/2024`` is ambiguous and
    refused, never guessed.

    A datetime with an offset (the app's ``toISOString()``) is a moment: its day is the
    calendar date in ``zone``, the school's (:func:`local_day`); ``zone`` None (a school mapped
    before zones existed, ``shared.catalog.timezones.AS_WRITTEN``): its date as written. A datetime without an offset
    is a local time already: its date as written. A date-only string is taken as written: the
    app may already have shifted it with ``toISOString().split('T')[0]``, which no value can show.
    """
    if blank(value):
        if required:
            raise Reject("missing_required", f"'{field}' is required")
        return None
    if not isinstance(value, str):
        raise Reject("invalid_date", f"'{field}' is a {type(value).__name__}, expected a date string")
    raw = value.strip()
    if m := _ISO_DATE.match(raw):
        return _make_date(m[1], m[2], m[3], field, raw)
    if "T" in raw or " " in raw:
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None or zone is None:
                return moment.date()
            try:
                return local_day(moment, zone)
            except OverflowError:  # year 1 or 9999 pushed out of range by the offset
                raise Reject("invalid_date", f"'{field}' is out of range in the school's time zone: {raw[:40]!r}") from None
    if m := _DOTTED.match(raw):
        return _make_date(m[3], m[2], m[1], field, raw)
    if m := _YMD_SLASHED.match(raw):
        return _make_date(m[1], m[2], m[3], field, raw)
    if m := _SLASHED.match(raw):
        first, second = int(m[1]), int(m[2])
        if first > 12 >= second or first == second:
            return _make_date(m[3], m[2], m[1], field, raw)
        if second > 12 >= first:
            return _make_date(m[3], m[1], m[2], field, raw)
        raise Reject("ambiguous_date", f"'{field}' could be day/month or month/day: {raw!r}")
    raise Reject("invalid_date", f"'{field}' is not a date: {raw[:40]!r}")


_DAY = timedelta(days=1)


def _midnight(moment: datetime) -> bool:
    return moment.hour == moment.minute == moment.second == moment.microsecond == 0


def local_day(moment: datetime, zone: tzinfo) -> date:
    """The school's calendar day of a moment written into a date-only field.

    Forms store a local date as its midnight (``new Date(y, m, d).toISOString()``): in
    Europe/Skopje a local 31 March 2024 is ``2024-03-30T23:00:00.000Z`` (+01:00 until the DST
    change at 02:00 that day). A moment that is midnight under the offset ``zone`` has then is
    that day. One that is midnight under the *other* offset of a DST day, starting that day
    (a browser that gave the whole day its summer time: ``2024-03-30T22:00:00.000Z``), is that
    day too, not 23:00 the evening before. Any other moment (a ``dateRecorded`` made by
    ``new Date()``) is its calendar date in ``zone``. Only a moment at exactly 00:00:00.000
    under an offset the zone has on the day it starts is read the second way.
    """
    local = moment.astimezone(zone)
    if _midnight(local):
        return local.date()
    for step in (-_DAY, _DAY):
        try:
            offset = (moment + step).astimezone(zone).utcoffset()
        except OverflowError:  # at the ends of the calendar: no neighbour
            continue
        if offset is None or offset == local.utcoffset():
            continue
        shifted = moment.astimezone(timezone(offset))
        if _midnight(shifted) and offset in _offsets_on(shifted.date(), zone):
            return shifted.date()
    return local.date()


def _offsets_on(day: date, zone: tzinfo) -> set[Any]:
    """The offsets ``zone`` has during ``day`` (two on a DST day)."""
    return {datetime.combine(day, at, tzinfo=zone).utcoffset() for at in (time(0, 0), time(23, 59))}


_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)$")


def parse_decimal(
    value: Any,
    field: str,
    *,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
    exclusive_minimum: bool = False,
    scale: int | None = None,
    required: bool = False,
) -> Decimal | None:
    """A number, from a JSON number or a string such as ``"850"`` or ``"3,8"``."""
    if blank(value):
        if required:
            raise Reject("missing_required", f"'{field}' is required")
        return None
    if isinstance(value, bool):
        raise Reject("invalid_number", f"'{field}' is a boolean, expected a number")
    if isinstance(value, (int, float)):
        result = Decimal(str(value))
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        result = Decimal(value.strip().replace(",", "."))
    else:
        raise Reject("invalid_number", f"'{field}' is not a number: {str(value)[:40]!r}")
    if not result.is_finite():
        raise Reject("invalid_number", f"'{field}' is not a finite number")
    if minimum is not None and (result < minimum or (exclusive_minimum and result == minimum)):
        raise Reject("out_of_range", f"'{field}' is {result}, below the allowed range")
    if maximum is not None and result > maximum:
        raise Reject("out_of_range", f"'{field}' is {result}, above the allowed maximum {maximum}")
    if scale is not None and decimal_places(result) > scale:
        raise Reject("too_precise", f"'{field}' has more than {scale} decimal places; it would be rounded")
    return result


def decimal_places(value: Decimal) -> int:
    """How many decimal places a finite number needs (``1.50`` needs 1), without rounding.

    Counted on the digits themselves: ``quantize`` would raise for a number longer than the
    decimal context's precision, which a hostile file is free to send.
    """
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing)) if any(digits) else 0


INT_MAX = Decimal(2**31 - 1)
"""The largest value of a PostgreSQL ``INT`` column."""


def numeric_max(precision: int, scale: int) -> Decimal:
    """The largest value of a PostgreSQL ``DECIMAL(precision, scale)`` column."""
    return Decimal(10 ** (precision - scale)) - Decimal(1).scaleb(-scale)


_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def parse_bool(value: Any, field: str) -> bool | None:
    if blank(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise Reject("invalid_boolean", f"'{field}' is not a yes/no value: {str(value)[:20]!r}")


def enum(value: Any, field: str, allowed: frozenset[str], *, required: bool = False) -> str | None:
    """One of ``allowed``, compared without surrounding space or case."""
    result = text(value, field, required=required)
    if result is None:
        return None
    folded = result.lower()
    if folded not in allowed:
        raise Reject("invalid_enum", f"'{field}' is {result[:40]!r}, expected one of {sorted(allowed)}")
    return folded


_PHONE = re.compile(r"^\+?[\d\s().\-/]{5,}$")


def looks_like_phone(value: str) -> bool:
    return bool(_PHONE.match(value)) and sum(ch.isdigit() for ch in value) >= 5


def split_contact(value: Any, field: str) -> tuple[str | None, str | None]:
    """``"Sarah Johnson - +1-555-0201"`` -> (name, phone); either part may be missing."""
    raw = text(value, field)
    if raw is None:
        return None, None
    padded = f" {raw}"  # so an empty name part (" - +1-555…", trimmed to "- +1-555…") still splits
    if " - " in padded:
        name, phone = (part.strip() for part in padded.rsplit(" - ", 1))
        if looks_like_phone(phone):
            return name or None, phone
    if looks_like_phone(raw):
        return None, raw
    return raw, None
