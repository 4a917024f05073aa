"""Which records of a batch can be written now, and which must wait for a parent. Pure.

Each domain has its own topic, so a payment can arrive before its obligation and a
student before their class. A record is written only when every row it references in
another record exists, either already in the database or among the records written in
the same transaction. Otherwise the whole record (all its rows) is parked. Parking
cascades: a record whose parent is itself parked is parked too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.catalog.tables import TABLES
from shared.ledger.keys import RecordKey, Ref, record_key
from shared.ledger.versions import is_delete, version_of, wins
from shared.wire.messages import MappedRecord

_REFERENCES = {name: spec.references for name, spec in TABLES.items()}


def references(record: MappedRecord) -> set[Ref]:
    """The rows of other records this record's rows point at."""
    refs: set[Ref] = set()
    for row in record.rows:
        for column, target in _REFERENCES[row.table]:
            value = row.values.get(column)
            if value is not None:
                refs.add((target, str(value)))
    return refs


def provides(record: MappedRecord) -> set[Ref]:
    return {(row.table, str(row.values["id"])) for row in record.rows}


def newest_per_record(records: Iterable[MappedRecord]) -> list[MappedRecord]:
    """Of each record, the write of its content that wins (``shared.ledger.versions``) and the delete
    that wins, in first-seen order.

    A batch can hold a record twice (a redelivery, a re-published snapshot, two changes):
    the upserts must not touch one row twice in a statement, and the newer write must win.
    A delete is kept beside the content's write, not instead of it: the rows are written
    whichever comes first (a soft delete keeps them), so what references them is too. (The
    loader calls this for a batch's snapshot records and its changes apart: each is a step.)
    """
    chosen: dict[tuple[RecordKey, bool], MappedRecord] = {}
    for record in records:
        key = (record_key(record), is_delete(record))  # a delete never hides a write of the content
        if key not in chosen or wins(record, version_of(chosen[key])):
            chosen[key] = record
    return list(chosen.values())


@dataclass(frozen=True)
class Plan:
    ready: list[MappedRecord]
    parked: list[tuple[MappedRecord, set[Ref]]]  # each with the references it still waits for


def plan(records: list[MappedRecord], existing: set[Ref]) -> Plan:
    """Split records into those that can be written now and those that must wait."""
    keys = [record_key(r) for r in records]
    needs = [references(r) for r in records]
    gives = [provides(r) for r in records]
    waiting: dict[RecordKey, set[Ref]] = {}
    while True:
        available = existing.union(*(g for k, g in zip(keys, gives, strict=True) if k not in waiting))
        newly = {
            k: missing for k, need in zip(keys, needs, strict=True) if k not in waiting and need and (missing := need - available)
        }
        if not newly:
            break
        waiting.update(newly)
    return Plan(
        ready=[r for r, k in zip(records, keys, strict=True) if k not in waiting],
        parked=[(r, waiting[k]) for r, k in zip(records, keys, strict=True) if k in waiting],
    )
