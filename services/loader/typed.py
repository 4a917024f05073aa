"""From a mapped row's JSON-ready values to the Python values PostgreSQL holds. Pure.

The loader COPYs these (``services.loader.convert``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from shared.catalog.tables import TableSpec


def _timestamp(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "uuid": lambda v: v if isinstance(v, (str, uuid.UUID)) else str(v),  # asyncpg encodes uuid text itself
    "text": str,
    "date": lambda v: v if isinstance(v, date) else date.fromisoformat(str(v)),
    "time": lambda v: v if isinstance(v, time) else time.fromisoformat(str(v)),
    "timestamptz": _timestamp,
    "numeric": lambda v: Decimal(str(v)),
    "int": int,
    "bool": bool,
    "jsonb": lambda v: v,  # the pool's jsonb codec encodes (shared.platform.db)
}


def to_record(spec: TableSpec, values: dict[str, Any]) -> tuple[Any, ...]:
    """The row as a tuple in ``spec.columns`` order, each value of its column's type."""
    return tuple(None if values.get(name) is None else CONVERTERS[kind](values[name]) for name, kind in spec.columns)
