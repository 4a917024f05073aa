"""Turning a parsed snapshot into the messages ingest sends downstream. Pure.

Every entry becomes exactly one record (:func:`plan_fanout`): a :class:`RawRecord` for its
domain's raw topic, or a :class:`QuarantinedRecord` when ingest already knows it cannot be
migrated. That one-to-one rule is what makes the report's counts add up. On the wire the
records travel in batches (:func:`fanout_batches`): each entry in exactly one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.catalog.domains import Domain
from shared.catalog.tables import DOMAIN_LOAD_ORDER
from shared.platform.topics import batch_key, record_key
from shared.source.snapshot import ParsedSnapshot, fold
from shared.wire.batching import header, pack, quarantine_entry, quarantine_header, raw_entry
from shared.wire.messages import (
    AuditSummary,
    QuarantinedRecord,
    RawRecord,
    SnapshotManifest,
    Stage,
    quarantined,
)


@dataclass(frozen=True)
class Outgoing:
    domain: Domain
    key: bytes
    message: RawRecord | QuarantinedRecord


def classroom_hints(parsed: ParsedSnapshot) -> dict[str, dict[str, str]]:
    """For classes without ``roomId``: the classroom whose name equals ``room`` (when exactly one does)."""
    by_name = parsed.classroom_ids_by_name()
    hints = {}
    for class_id, cls in parsed.valid_records(Domain.CLASSES).items():
        if cls.get("roomId") in (None, "") and (room := by_name.get(fold(cls.get("room")) or "")):
            hints[class_id] = {"classroom_id": room}
    return hints


def plan_fanout(
    parsed: ParsedSnapshot, manifest: SnapshotManifest, versions: Mapping[tuple[str, str], datetime] | None = None
) -> list[Outgoing]:
    """``versions``: the version time of each record whose version is not the snapshot's read
    time (its device's history says so: ``shared.ledger.devices``)."""
    versions = versions or {}
    out: list[Outgoing] = []
    hints = classroom_hints(parsed)
    for domain, entries in parsed.entries.items():
        for entry in entries:
            key = record_key(manifest.school_id, domain, entry.legacy_id, entry.index)
            message: RawRecord | QuarantinedRecord
            if entry.problem is None:
                message = RawRecord(
                    school_id=manifest.school_id,
                    snapshot_id=manifest.snapshot_id,
                    domain=domain,
                    index=entry.index,
                    legacy_id=entry.legacy_id,
                    source_ts=versions.get((domain.value, entry.legacy_id or ""), manifest.taken_at),
                    record=entry.record,
                    hints=hints.get(entry.legacy_id, {}) if domain is Domain.CLASSES and entry.legacy_id else {},
                )
            else:
                message = QuarantinedRecord(
                    school_id=manifest.school_id,
                    snapshot_id=manifest.snapshot_id,
                    domain=domain,
                    index=entry.index,
                    legacy_id=entry.legacy_id,
                    stage=Stage.INGEST,
                    reason=entry.problem.reason,
                    message=entry.problem.message,
                    payload=entry.record,
                )
            out.append(Outgoing(domain, key, message))
    return out


@dataclass(frozen=True)
class WireBatch:
    """One message for a raw topic (``raw``, the domain's) or the quarantine topic."""

    kind: Literal["raw", "quarantine"]
    domain: Domain
    key: bytes
    body: bytes
    records: int


def fanout_batches(
    outgoing: list[Outgoing],
    manifest: SnapshotManifest,
    *,
    max_records: int,
    max_bytes: int,
    max_record_bytes: int | None = None,
    default_ts: datetime | None = None,
    timezone: str,
) -> Iterator[WireBatch]:
    """The fan-out as batch messages: domains parents first (``DOMAIN_LOAD_ORDER``), per
    domain its raw records then its quarantined ones, in snapshot order, each in exactly
    one message, keyed ``school/domain``. A record larger than ``max_record_bytes`` could
    not travel in one message: it is quarantined as ``record_too_large`` (without its
    payload, which would not fit either; it stays in the verified backup). ``timezone``: the
    school's (``shared.catalog.timezones``), which the transform reads date-only fields in."""
    limit = max_record_bytes or max_bytes
    school_id = manifest.school_id
    by_domain: dict[Domain, tuple[list[bytes], list[bytes]]] = {}
    for item in outgoing:
        raw, quarantine = by_domain.setdefault(item.domain, ([], []))
        m = item.message
        if isinstance(m, RawRecord):
            # A version older than the snapshot (unchanged on its device, or seen elsewhere first) travels with it.
            entry = raw_entry(
                m.index, m.legacy_id, m.record, m.hints, ts=None if m.source_ts == manifest.taken_at else m.source_ts
            )
            if len(entry) <= limit:
                raw.append(entry)
                continue
            m = quarantined(
                m,
                stage=Stage.INGEST,
                reason="record_too_large",
                payload=None,
                message=f"the record is {len(entry)} bytes as JSON, over the limit of {limit} "
                "(SCHOOLMIG_MAX_RECORD_BYTES); it is kept in the verified backup",
            )
        quarantine.append(quarantine_entry(m, limit))  # a payload too large to travel is left out
    for domain in sorted(by_domain, key=DOMAIN_LOAD_ORDER.index):  # parents first
        raw, quarantine = by_domain[domain]
        key = batch_key(school_id, domain)
        head = header("raw.batch", school_id, manifest.snapshot_id, domain, manifest.taken_at, default_ts, timezone)
        for body, n in pack(head, raw, max_records=max_records, max_bytes=max_bytes):
            yield WireBatch("raw", domain, key, body, n)
        for body, n in pack(quarantine_header(school_id), quarantine, max_records=max_records, max_bytes=max_bytes):
            yield WireBatch("quarantine", domain, key, body, n)


def audit_summary(parsed: ParsedSnapshot) -> AuditSummary:
    counts = {domain: 0 for domain in Domain}
    counts.update(parsed.counts())
    return AuditSummary(
        source_counts=counts,
        unknown_keys=sorted(parsed.unknown_keys),
        unmapped_keys=dict(sorted(parsed.unmapped_keys.items())),
        aliased_keys=dict(sorted(parsed.aliased_keys.items())),
        duplicate_ids=parsed.duplicate_ids(),
        corrupted=parsed.corrupted(),
    )
