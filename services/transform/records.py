"""Raw records in, their target rows or their quarantine entries out. Pure.

:func:`transform` maps one record into one message; :func:`transform_batch` maps a whole
:class:`RawBatch` straight into wire entries (each encoded once, see ``shared.wire.batching``),
one per source record: its rows for the domain's rows topic, or its quarantine entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared.catalog.timezones import UnknownZone, mapping_zone
from shared.mapping import Mapped, map_record
from shared.platform.kafka import MAX_MESSAGE_BYTES
from shared.wire.batching import quarantine_entry, rows_entry
from shared.wire.messages import (
    ChangeOp,
    MappedRecord,
    QuarantinedRecord,
    RawBatch,
    RawRecord,
    Stage,
    TargetRow,
    quarantined,
)


def _map(raw: RawRecord) -> list[dict[str, object]] | tuple[str, str]:
    """The record's rows as wire dicts (``table``, ``values`` with provenance), or (reason, message)."""
    if raw.legacy_id is None or not isinstance(raw.record, dict):
        # Ingest quarantines these itself; a raw record like this means a foreign producer.
        return "not_mappable", "record has no id or is not an object"
    default_ts = (raw.default_ts or raw.source_ts).isoformat()  # stable across a school's snapshots
    try:
        zone = mapping_zone(raw.timezone)
    except UnknownZone as exc:  # ingest checked it; a raw batch like this means a foreign producer
        return "unknown_timezone", str(exc)
    result = map_record(raw.domain, raw.school_id, raw.legacy_id, raw.record, raw.hints, default_ts, zone=zone)
    if isinstance(result, Mapped):
        provenance = {"school_id": raw.school_id, "legacy_id": raw.legacy_id}
        return [{"table": table, "values": {**values, **provenance}} for table, values in result.rows]
    return result.reason, result.message


def transform(raw: RawRecord) -> MappedRecord | QuarantinedRecord:
    out = _map(raw)
    if isinstance(out, tuple):
        return _quarantine(raw, *out)
    assert raw.legacy_id is not None
    return MappedRecord(
        school_id=raw.school_id,
        snapshot_id=raw.snapshot_id,
        domain=raw.domain,
        index=raw.index,
        legacy_id=raw.legacy_id,
        source_ts=raw.source_ts,
        rows=[TargetRow(**row) for row in out],  # type: ignore[arg-type]
        change=raw.change,
    )


@dataclass
class TransformedBatch:
    """A raw batch's outcome, as encoded wire entries, in the batch's order."""

    mapped: list[bytes] = field(default_factory=list)
    """``MappedEntry`` JSON, one per mapped record, for the domain's rows topic."""
    quarantined: list[bytes] = field(default_factory=list)
    """``QuarantinedRecord`` JSON, one per record that cannot be migrated."""


def transform_batch(batch: RawBatch, max_entry_bytes: int = MAX_MESSAGE_BYTES // 2) -> TransformedBatch:
    """``max_entry_bytes``: a record whose rows would not travel in one message (rows are larger
    than their source: ``extras`` keep what the columns do not) is quarantined as
    ``record_too_large`` with its source record."""
    out = TransformedBatch()
    for raw in batch.records():
        try:
            mapped, quarantine = _transform_one(raw, max_entry_bytes, batch.source_ts)
        except Exception as exc:  # the mapping met a value nobody foresaw: this record's fault, no one else's
            mapped, quarantine = None, _quarantine(raw, "mapping_failed", f"the mapping raised {type(exc).__name__}")
        if mapped is not None:
            out.mapped.append(mapped)
        else:
            assert quarantine is not None
            out.quarantined.append(quarantine_entry(quarantine))
    return out


def _transform_one(raw: RawRecord, max_entry_bytes: int, batch_ts: datetime) -> tuple[bytes | None, QuarantinedRecord | None]:
    if raw.change is not None and raw.change.op is ChangeOp.DELETE and raw.legacy_id is not None:
        return rows_entry(raw.index, raw.legacy_id, [], change=raw.change), None  # no record to map: marked deleted
    result = _map(raw)
    if isinstance(result, tuple):
        return None, _quarantine(raw, *result)
    assert raw.legacy_id is not None  # _map quarantines a record without one
    own = raw.source_ts if raw.change is None and raw.source_ts != batch_ts else None
    entry = rows_entry(raw.index, raw.legacy_id, result, ts=own, change=raw.change)
    if len(entry) <= max_entry_bytes:
        return entry, None
    why = f"its rows are {len(entry)} bytes as JSON, over the {max_entry_bytes} one message can carry"
    return None, _quarantine(raw, "record_too_large", why)


def _quarantine(raw: RawRecord, reason: str, message: str) -> QuarantinedRecord:
    return quarantined(raw, stage=Stage.TRANSFORM, reason=reason, message=message, payload=raw.record)
