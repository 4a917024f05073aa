"""One raw record in, one message out: its target rows, or its quarantine entry. Pure."""

from __future__ import annotations

from shared.mapping import Mapped, map_record
from shared.messages import (
    MappedRecord,
    QuarantinedRecord,
    RawRecord,
    Stage,
    TargetRow,
    quarantined,
)


def transform(raw: RawRecord) -> MappedRecord | QuarantinedRecord:
    if raw.legacy_id is None or not isinstance(raw.record, dict):
        # Ingest quarantines these itself; a raw record like this means a foreign producer.
        return _quarantine(raw, "not_mappable", "record has no id or is not an object")
    result = map_record(raw.domain, raw.school_id, raw.legacy_id, raw.record, raw.hints, raw.source_ts.isoformat())
    if isinstance(result, Mapped):
        provenance = {"school_id": raw.school_id, "legacy_id": raw.legacy_id}
        return MappedRecord(
            school_id=raw.school_id,
            snapshot_id=raw.snapshot_id,
            domain=raw.domain,
            index=raw.index,
            legacy_id=raw.legacy_id,
            source_ts=raw.source_ts,
            rows=[TargetRow(table=table, values={**values, **provenance}) for table, values in result.rows],
        )
    return _quarantine(raw, result.reason, result.message)


def _quarantine(raw: RawRecord, reason: str, message: str) -> QuarantinedRecord:
    return quarantined(raw, stage=Stage.TRANSFORM, reason=reason, message=message, payload=raw.record)
