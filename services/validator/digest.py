"""One canonical text per row, computed the same way by PostgreSQL and by Python. Pure.

The validator compares what the database holds with what the source says it should hold
without moving every row out of the database: PostgreSQL hashes its rows
(:func:`record_digests_sql`), Python hashes the rows the source maps to
(:func:`row_digest`), and only records whose digests differ are read back and compared
field by field (the way data-diff tools bisect).

The canonical form of a row: each column (in the catalogue's order, provenance of the
write excluded) as ``<length>:<text>``, or ``~`` for NULL, concatenated; its MD5 is the
row digest. A record's digest is the MD5 of its rows' digests, sorted; a domain's
checksum the MD5 of its records' digests, sorted. Length prefixes make the form
injective, so equal digests mean equal rows (up to MD5 collisions, which nobody here
is trying to make). A value the two sides would print differently (a float PostgreSQL
writes in another notation, say) only costs a field-by-field comparison, never a wrong
verdict: the comparison decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from shared.domains import Domain
from shared.tables import TABLES, TableSpec

#: The write's provenance is not the source's data: a newer snapshot that says the same
#: thing leaves the digest unchanged.
NOT_COMPARED = frozenset({"source_snapshot_id", "source_ts"})

#: The tables each domain's records write, and the filter that tells a domain's rows apart
#: in a table two domains share (``users``: students and teachers).
DOMAIN_TABLES: dict[Domain, tuple[tuple[str, str | None], ...]] = {
    Domain.STUDENTS: (("users", "student"), ("students", None)),
    Domain.TEACHERS: (("users", "teacher"), ("teachers", None)),
    Domain.CLASSROOMS: (("classrooms", None),),
    Domain.CLASSES: (("classes", None), ("class_schedules", None)),
    Domain.PAYMENT_OBLIGATIONS: (("payment_obligations", None),),
    Domain.PAYMENTS: (("payments", None),),
    Domain.ATTENDANCE: (("attendance_records", None),),
    Domain.ASSESSMENTS: (("assessments", None),),
    Domain.GRADES: (("grades", None),),
    Domain.PRIVATE_LESSONS: (
        ("private_lessons", None), ("private_lesson_payment_obligations", None), ("private_lesson_payments", None),
    ),
}  # fmt: skip


def compared_columns(spec: TableSpec) -> list[tuple[int, str, str]]:
    """(position in the row, name, kind) of the columns the digest covers."""
    return [(i, name, kind) for i, (name, kind) in enumerate(spec.columns) if name not in NOT_COMPARED]


# ---------------------------------------------------------------------------- PostgreSQL side

_SQL_TEXT = {
    "uuid": "{c}::text",
    "text": "{c}",
    "date": "to_char({c}, 'YYYY-MM-DD')",
    "time": "to_char({c}, 'HH24:MI:SS.US')",
    "timestamptz": "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    "numeric": "trim_scale({c})::text",
    "int": "{c}::text",
    "bool": "{c}::text",
    "jsonb": "{c}::text",
}


def row_digest_sql(spec: TableSpec, alias: str = "t") -> str:
    """The SQL expression of a row's digest. Identifiers come from the fixed catalogue."""
    parts = []
    for _, name, kind in compared_columns(spec):
        text = _SQL_TEXT[kind].format(c=f"{alias}.{name}")
        parts.append(f"coalesce(length({text})::text || ':' || {text}, '~')")
    return f"md5(concat({', '.join(parts)}))"


def rows_sql(domain: Domain) -> str:
    """(legacy_id, row digest) of every row of a domain for the school ``$1``."""
    selects = []
    for table, role in DOMAIN_TABLES[domain]:
        where = "t.school_id = $1" + (f" AND t.role = '{role}'" if role else "")
        selects.append(f"SELECT t.legacy_id, {row_digest_sql(TABLES[table])} AS d FROM {table} t WHERE {where}")
    return " UNION ALL ".join(selects)


def record_digests_sql(domain: Domain) -> str:
    """(legacy_id, record digest) of every record of a domain for the school ``$1``."""
    return (
        f"SELECT legacy_id, md5(string_agg(d, '' ORDER BY d COLLATE \"C\")) AS digest "
        f"FROM ({rows_sql(domain)}) r GROUP BY legacy_id"
    )


def domain_checksum_sql(domain: Domain) -> str:
    """(checksum, record count) of a domain for the school ``$1``: one row, one round trip."""
    return (
        f"SELECT md5(coalesce(string_agg(digest, '' ORDER BY digest COLLATE \"C\"), '')) AS checksum, count(*) AS records "
        f"FROM ({record_digests_sql(domain)}) x"
    )


# ---------------------------------------------------------------------------- Python side


def _jsonb_text(value: Any) -> str:
    """``value`` as PostgreSQL prints a jsonb: keys by length then bytes, ``", "`` and ``": "``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_jsonb_text(value[k])}" for k in keys) + "}"
    return json.dumps(value, ensure_ascii=False)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def canonical_text(kind: str, value: Any) -> str:
    if kind == "text":
        return str(value)
    if kind == "uuid":
        return str(value).lower()
    if kind == "timestamptz":
        v = _utc(value)
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    if kind == "date":
        assert isinstance(value, date)
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if kind == "time":
        assert isinstance(value, time)
        return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    if kind == "numeric":
        d = Decimal(value).normalize()
        return "0" if d.is_zero() else format(d, "f")
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return str(int(value))
    return _jsonb_text(value)  # jsonb


def row_digest(spec: TableSpec, row: tuple[Any, ...]) -> str:
    """The digest of a typed row (``shared.typed.to_record``), as PostgreSQL computes it."""
    parts = []
    for i, _, kind in compared_columns(spec):
        value = row[i]
        if value is None:
            parts.append("~")
        else:
            text = canonical_text(kind, value)
            parts.append(f"{len(text)}:{text}")
    return hashlib.md5("".join(parts).encode(), usedforsecurity=False).hexdigest()


def combine(digests: Iterable[str]) -> str:
    """A record's digest from its rows', or a domain's checksum from its records'."""
    return hashlib.md5("".join(sorted(digests)).encode(), usedforsecurity=False).hexdigest()
