"""From JSON-ready row values to the Python values asyncpg's COPY wants. Pure."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from shared.messages import MappedRecord
from shared.tables import TABLES, TableSpec


def _timestamp(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "uuid": lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)),
    "text": str,
    "date": lambda v: v if isinstance(v, date) else date.fromisoformat(str(v)),
    "time": lambda v: v if isinstance(v, time) else time.fromisoformat(str(v)),
    "timestamptz": _timestamp,
    "numeric": lambda v: Decimal(str(v)),
    "int": int,
    "bool": bool,
    "jsonb": lambda v: v,  # the pool's jsonb codec encodes (shared.db)
}


def to_record(spec: TableSpec, values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        None if values.get(name) is None else _CONVERTERS[kind](values[name]) for name, kind in spec.columns
    )


def rows_by_table(records: Iterable[MappedRecord]) -> dict[str, list[tuple[Any, ...]]]:
    """Group the rows of a batch per table, one row per id: the newest source wins.

    A batch can hold the same record twice (a redelivery, a re-published snapshot); an
    upsert must not touch one row twice in one statement, and the newer write must win.
    """
    newest: dict[str, dict[Any, tuple[Any, dict[str, Any]]]] = {}
    for record in records:
        for row in record.rows:
            values = {**row.values, "source_snapshot_id": record.snapshot_id, "source_ts": record.source_ts}
            by_id = newest.setdefault(row.table, {})
            current = by_id.get(values["id"])
            if current is None or current[0] <= record.source_ts:
                by_id[values["id"]] = (record.source_ts, values)
    return {
        table: [to_record(TABLES[table], values) for _, values in by_id.values()] for table, by_id in newest.items()
    }
