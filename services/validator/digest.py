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
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any

from shared.catalog.domains import Domain
from shared.catalog.tables import DOMAIN_TABLES, TABLES, TableSpec

#: The write's provenance is not the source's data: a newer snapshot that says the same
#: thing leaves the digest unchanged.
NOT_COMPARED = frozenset({"source_snapshot_id", "source_ts"})


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
        where = "t.school_id = $1 AND t.deleted_at IS NULL" + (f" AND t.role = '{role}'" if role else "")
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
# Each accepts a mapped row's JSON-ready value (a string, mostly) or the typed value
# asyncpg returns; what repeats across rows (the same dates and times) is formatted once.


@lru_cache(maxsize=4096)
def _key_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(keys, key=lambda k: (len(k.encode()), k.encode())))


def _pg_order(value: Any) -> Any:
    """Dicts re-keyed in jsonb's order (shorter keys first, then by bytes), recursively.
    Rows of one table share their extras' shapes: each key order is worked out once."""
    if isinstance(value, dict):
        return {k: _pg_order(value[k]) for k in _key_order(tuple(value))}
    if isinstance(value, list):
        return [_pg_order(v) for v in value]
    return value


def _jsonb_text(value: Any) -> str:
    """``value`` as PostgreSQL prints a jsonb (``json.dumps``' default separators are jsonb's).
    A float may print otherwise (``1e-07``): that only costs a field-by-field comparison."""
    if not value and isinstance(value, dict):
        return "{}"
    return json.dumps(_pg_order(value), ensure_ascii=False)


@lru_cache(maxsize=65536)
def _timestamp_text(value: str | datetime) -> str:
    v = datetime.fromisoformat(value) if isinstance(value, str) else value
    v = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


@lru_cache(maxsize=65536)
def _date_text(value: str | date) -> str:
    v = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"


@lru_cache(maxsize=4096)
def _time_text(value: str | time) -> str:
    v = time.fromisoformat(value) if isinstance(value, str) else value
    return f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


@lru_cache(maxsize=65536)
def _numeric_text(value: str) -> str:
    d = Decimal(value).normalize()
    return "0" if d.is_zero() else format(d, "f")


_PY_TEXT: dict[str, Callable[[Any], str]] = {
    "text": str,
    "uuid": lambda v: str(v).lower(),
    "timestamptz": _timestamp_text,
    "date": _date_text,
    "time": _time_text,
    "numeric": lambda v: _numeric_text(str(v)),
    "int": lambda v: str(int(v)),
    "bool": lambda v: "true" if v else "false",
    "jsonb": _jsonb_text,
}


def canonical_text(kind: str, value: Any) -> str:
    """A column's value as the digest's SQL prints it."""
    return _PY_TEXT[kind](value)


_PLANS = {name: [(column, _PY_TEXT[kind]) for _, column, kind in compared_columns(spec)] for name, spec in TABLES.items()}


def row_digest(table: str, values: dict[str, Any]) -> str:
    """The digest of a row given by column name (a mapped row, or one asyncpg returned), as
    PostgreSQL computes it."""
    parts = []
    for column, text_of in _PLANS[table]:
        value = values.get(column)
        if value is None:
            parts.append("~")
        else:
            text = text_of(value)
            parts.append(f"{len(text)}:{text}")
    return hashlib.md5("".join(parts).encode(), usedforsecurity=False).hexdigest()


def combine(digests: Iterable[str]) -> str:
    """A record's digest from its rows', or a domain's checksum from its records'."""
    return hashlib.md5("".join(sorted(digests)).encode(), usedforsecurity=False).hexdigest()
