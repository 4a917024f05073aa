"""How the ledger names a record and a row. Pure."""

from __future__ import annotations

from shared.wire.messages import MappedRecord

RecordKey = tuple[str, str, str]  # (school_id, domain, legacy_id)
Ref = tuple[str, str]  # (table, row id as text)


def record_key(record: MappedRecord) -> RecordKey:
    return (record.school_id, record.domain.value, record.legacy_id)
