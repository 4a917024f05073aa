"""What the database should hold for a snapshot, from the verified backup alone. Pure.

The backup is parsed exactly as ingest parsed it (``shared.snapshot``, with the same
hints over the whole snapshot), and every record is mapped by the same pure rules the
transform uses (``shared.mapping``). What comes out is, per domain, each record the
source says should be in PostgreSQL: its source record (to compare in the school's terms
through the reverse mapping), its rows as the transform maps them, and their digest.
Records the source itself disqualifies (not an object, a duplicate id, a value that
does not fit) are left out: they belong in quarantine, not in the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.validator.digest import combine, row_digest
from shared.domains import Domain
from shared.fanout import classroom_hints
from shared.mapping import Mapped, map_record
from shared.messages import SnapshotManifest
from shared.snapshot import MAX_RECORD_DEPTH, ParsedSnapshot, parse_snapshot

Row = tuple[str, dict[str, Any]]  # (table, JSON-ready values by column), as the transform maps it


@dataclass(frozen=True)
class ExpectedRecord:
    legacy_id: str
    source: dict[str, Any]
    rows: list[Row]


@dataclass
class Expected:
    """Per domain: the digest of each record that should be in the tables (and, unless only
    digests were asked for, the record itself), and the ids the source repeats. What should
    not be in the tables is simply absent: the quarantine table says where it went."""

    digests: dict[Domain, dict[str, str]] = field(default_factory=dict)
    records: dict[Domain, dict[str, ExpectedRecord]] | None = None
    duplicate_ids: dict[Domain, list[str]] = field(default_factory=dict)


def expected_state(
    content: bytes, manifest: SnapshotManifest, *, keep_records: bool = True, max_depth: int = MAX_RECORD_DEPTH,
    default_ts: datetime | None = None,
) -> Expected:
    """``keep_records=False`` returns digests only: small enough to come back cheaply from
    a worker process, which is where the validator computes them. ``max_depth``: as ingest
    read it (``SCHOOLMIG_MAX_NESTING_DEPTH``)."""
    parsed = parse_snapshot(content, manifest.format, max_depth=max_depth)
    return expected_from(parsed, manifest, keep_records=keep_records, default_ts=default_ts)


def expected_from(
    parsed: ParsedSnapshot, manifest: SnapshotManifest, *, keep_records: bool = True, default_ts: datetime | None = None
) -> Expected:
    """``default_ts``: what ingest gave records without timestamps (the school's first
    snapshot's time, stored with the snapshot); None: the snapshot's own time."""
    out = Expected(records={} if keep_records else None)
    hints = classroom_hints(parsed)
    default = (default_ts or manifest.taken_at).isoformat()  # what the transform gives records without timestamps
    provenance = {"school_id": manifest.school_id}
    for domain in Domain:
        digests: dict[str, str] = {}
        records: dict[str, ExpectedRecord] = {}
        duplicates: list[str] = []
        for entry in parsed.entries.get(domain, []):
            if entry.problem is not None:
                if entry.problem.reason == "duplicate_id" and entry.legacy_id:
                    duplicates.append(entry.legacy_id)
                continue
            assert entry.legacy_id is not None
            record_hints = hints.get(entry.legacy_id, {}) if domain is Domain.CLASSES else {}
            result = map_record(domain, manifest.school_id, entry.legacy_id, entry.record, record_hints, default)
            if not isinstance(result, Mapped):  # the transform quarantines it the same way
                continue
            rows = [(table, {**values, **provenance, "legacy_id": entry.legacy_id}) for table, values in result.rows]
            digests[entry.legacy_id] = combine(row_digest(table, values) for table, values in rows)
            if keep_records:
                records[entry.legacy_id] = ExpectedRecord(entry.legacy_id, entry.record, rows)
        out.digests[domain], out.duplicate_ids[domain] = digests, duplicates
        if out.records is not None:
            out.records[domain] = records
    return out
