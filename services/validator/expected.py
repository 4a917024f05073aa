"""What the database should hold for a snapshot, from the verified backup alone. Pure.

The backup is parsed exactly as ingest parsed it (``shared.source.snapshot``, with the same
hints over the whole snapshot), and every record is mapped by the same pure rules the
transform uses (``shared.mapping``). What comes out is, per domain, each record the
source says should be in PostgreSQL: its source record (to compare in the school's terms
through the reverse mapping), its rows as the transform maps them, and their digest.
Records the source itself disqualifies (not an object, a duplicate id, a value that
does not fit) are left out: they belong in quarantine, not in the tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.validator.digest import combine, row_digest
from shared.catalog.domains import Domain
from shared.catalog.timezones import AS_WRITTEN, mapping_zone
from shared.ledger.devices import Outcome, Ref
from shared.ledger.versions import Version, snapshot_version
from shared.mapping import Mapped, map_record
from shared.source.snapshot import MAX_RECORD_DEPTH, ParsedSnapshot, parse_snapshot
from shared.wire.fanout import classroom_hints
from shared.wire.messages import ChangeOp, SnapshotManifest

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
    content: bytes,
    manifest: SnapshotManifest,
    *,
    keep_records: bool = True,
    max_depth: int = MAX_RECORD_DEPTH,
    default_ts: datetime | None = None,
    aliases: dict[str, Domain] | None = None,
    timezone: str = AS_WRITTEN,
) -> Expected:
    """``keep_records=False`` returns digests only: small enough to come back cheaply from
    a worker process, which is where the validator computes them. ``max_depth``: as ingest
    read it (``SCHOOLMIG_MAX_NESTING_DEPTH``); ``aliases``: the key aliases its release used."""
    parsed = parse_snapshot(content, manifest.format, aliases=aliases, max_depth=max_depth)
    return expected_from(parsed, manifest, keep_records=keep_records, default_ts=default_ts, timezone=timezone)


def expected_from(
    parsed: ParsedSnapshot,
    manifest: SnapshotManifest,
    *,
    keep_records: bool = True,
    default_ts: datetime | None = None,
    timezone: str = AS_WRITTEN,
) -> Expected:
    """``default_ts``: what ingest gave records without timestamps (the school's first
    snapshot's time, stored with the snapshot); None: the snapshot's own time. ``timezone``:
    the school's (``shared.catalog.timezones``), as the transform read date-only fields."""
    zone = mapping_zone(timezone)
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
            result = map_record(domain, manifest.school_id, entry.legacy_id, entry.record, record_hints, default, zone=zone)
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


@dataclass(frozen=True)
class StoredChange:
    """A change as ingest kept it (``migration.changes``)."""

    domain: Domain
    record_id: str
    op: ChangeOp
    version: Version
    record: dict[str, Any] | None
    change_id: str
    late: bool = False
    """Received after the validation's cut: it may or may not be in the tables yet."""


def apply_changes(
    expected: Expected,
    changes: list[StoredChange],
    *,
    school_id: str,
    taken_at: datetime,
    default_ts: datetime | None,
    timezone: str = AS_WRITTEN,
    skip: frozenset[str] = frozenset(),
    bounds: Mapping[tuple[Domain, str], Version] | None = None,
) -> tuple[dict[Domain, set[str]], dict[Domain, set[str]]]:
    """The snapshot's expectation with the changes after it applied, the greatest version of
    each record winning (``shared.ledger.versions``), as the pipeline applies them. ``skip``: change
    ids in quarantine (the tables never got them). Returns, per domain, (the records left out
    of the comparison: changed after the cut (``late``), so the tables may hold either state;
    the records a change decides). ``bounds``: per record, the version its expectation
    already stands at (the school's devices merged, :func:`merged`): a change applies over a
    record only when it is newer than that, over a record no snapshot holds always; None:
    every record stands at the snapshot's own version."""
    after = snapshot_version(taken_at)
    default = (default_ts or taken_at).isoformat()
    zone = mapping_zone(timezone)  # the school's, as the transform read its changes
    provenance = {"school_id": school_id}
    latest: dict[tuple[Domain, str], StoredChange] = {}
    unsettled: dict[Domain, set[str]] = {d: set() for d in Domain}
    for change in changes:
        bound = after if bounds is None else bounds.get((change.domain, change.record_id))
        if change.change_id in skip or (bound is not None and change.version <= bound):
            continue
        if change.late:
            unsettled[change.domain].add(change.record_id)
            continue
        key = (change.domain, change.record_id)
        if key not in latest or latest[key].version < change.version:
            latest[key] = change
    for (domain, legacy_id), change in latest.items():
        digests = expected.digests.setdefault(domain, {})
        records = expected.records.setdefault(domain, {}) if expected.records is not None else None
        if legacy_id in unsettled[domain]:
            continue
        digests.pop(legacy_id, None)
        if records is not None:
            records.pop(legacy_id, None)
        if change.op is ChangeOp.DELETE or change.record is None:
            continue  # soft-deleted: its rows stay, marked, and are not compared
        result = map_record(domain, school_id, legacy_id, change.record, {}, default, zone=zone)
        if not isinstance(result, Mapped):  # the transform quarantined it: the tables may hold its last good state
            unsettled[domain].add(legacy_id)
            continue
        rows = [(table, {**values, **provenance, "legacy_id": legacy_id}) for table, values in result.rows]
        digests[legacy_id] = combine(row_digest(table, values) for table, values in rows)
        if records is not None:
            records[legacy_id] = ExpectedRecord(legacy_id, change.record, rows)
    for domain, ids in unsettled.items():
        for legacy_id in ids:
            expected.digests.get(domain, {}).pop(legacy_id, None)
            if expected.records is not None:
                expected.records.get(domain, {}).pop(legacy_id, None)
    decided: dict[Domain, set[str]] = {d: set() for d in Domain}
    for domain, legacy_id in latest:
        decided[domain].add(legacy_id)
    return unsettled, decided


@dataclass
class Merged:
    """The school's truth from its devices' newest snapshots (``shared.ledger.devices.merge``)."""

    expected: Expected
    bounds: dict[tuple[Domain, str], Version]
    """Per record a device held: the version its expectation stands at (its winning content's,
    or its deletion's when that is newer)."""
    winner: dict[tuple[Domain, str], str]
    """Per expected record: the device whose content it is."""
    unknown: dict[Domain, set[str]]
    """Records whose winning content its own snapshot could not migrate (quarantined there):
    the tables may hold an older write of them; not compared."""


def merged(by_device: Mapping[str, Expected], outcomes: Mapping[Ref, Outcome]) -> Merged:
    """Of each record, the expectation of the device whose content wins; nothing of a record
    whose greatest deletion is newer than every content (soft-deleted: its rows stay, marked)."""
    keep = all(e.records is not None for e in by_device.values())
    out = Merged(Expected(records={} if keep else None), {}, {}, {d: set() for d in Domain})
    for domain in Domain:
        out.expected.digests[domain] = {}
        if out.expected.records is not None:
            out.expected.records[domain] = {}
    for (domain_name, legacy_id), outcome in outcomes.items():
        domain = Domain(domain_name)
        key = (domain, legacy_id)
        stands = max(t for t in (outcome.content.ts if outcome.content else None, outcome.deletion) if t is not None)
        out.bounds[key] = snapshot_version(stands)
        if outcome.deleted or outcome.device is None or outcome.device not in by_device:
            continue
        source = by_device[outcome.device]
        digest = source.digests.get(domain, {}).get(legacy_id)
        if digest is None:
            out.unknown[domain].add(legacy_id)
            continue
        out.expected.digests[domain][legacy_id] = digest
        out.winner[key] = outcome.device
        if out.expected.records is not None and source.records is not None:
            out.expected.records[domain][legacy_id] = source.records[domain][legacy_id]
    return out
