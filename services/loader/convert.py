"""A batch's rows, grouped per table and converted for COPY, once per load. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.loader.typed import to_record
from shared.catalog.tables import TABLES
from shared.wire.messages import MappedRecord

Converted = list[tuple[str, Any, tuple[Any, ...]]]  # (table, id, COPY-ready row) per row of a record
ConversionCache = dict[int, tuple[MappedRecord, Converted]]


def rows_by_table(records: Iterable[MappedRecord], cache: ConversionCache | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Group the rows of a batch per table, one row per id: the newest source wins.

    A batch can hold the same record twice (a redelivery, a re-published snapshot); an
    upsert must not touch one row twice in one statement, and the newer write must win.
    """
    newest: dict[str, dict[Any, tuple[Any, tuple[Any, ...]]]] = {}
    for record in records:
        for table, row_id, converted in _converted(record, cache):
            by_id = newest.setdefault(table, {})
            current = by_id.get(row_id)
            if current is None or current[0] <= record.source_ts:
                by_id[row_id] = (record.source_ts, converted)
    return {table: [converted for _, converted in by_id.values()] for table, by_id in newest.items()}


def _converted(record: MappedRecord, cache: ConversionCache | None) -> Converted:
    """(table, id, COPY-ready row) for each row of a record, converted once per load.

    A refused batch is bisected, and un-parked records come back: without the cache the
    same rows would be converted again at every level. The cache holds the record itself:
    ``id()`` is unique only among live objects, and records re-read from parking are
    short-lived, so a key without its object could be reused by another record.
    """
    if cache is not None and (hit := cache.get(id(record))) is not None and hit[0] is record:
        return hit[1]
    provenance = {"source_snapshot_id": record.snapshot_id, "source_ts": record.source_ts}
    out = [(row.table, row.values["id"], to_record(TABLES[row.table], {**row.values, **provenance})) for row in record.rows]
    if cache is not None:
        cache[id(record)] = (record, out)
    return out
