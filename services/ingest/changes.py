"""Turning a client's change message into what ingest stores and sends downstream. Pure.

A change rides the same envelopes as a snapshot's records (``shared.wire.messages``, *batches
on the wire*): a ``raw.batch`` per domain whose entries carry their :class:`ChangeMeta`,
keyed ``school/domain`` so it shares the partition (and the order) of that school's
snapshot records and barriers. A change whose record the pipeline cannot carry faithfully
is quarantined here, by its change id, exactly like a snapshot's record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.catalog.domains import Domain
from shared.catalog.tables import DOMAIN_LOAD_ORDER
from shared.platform.topics import batch_key
from shared.source import jsonsafe
from shared.wire.batching import encode, header, pack, quarantine_entry, quarantine_header, raw_entry
from shared.wire.fanout import WireBatch
from shared.wire.messages import Change, ChangeBatch, ChangeMeta, ChangeOp, QuarantinedRecord, Stage


def meta(batch: ChangeBatch, change: Change) -> ChangeMeta:
    return ChangeMeta(op=change.op, client_id=batch.client_id, seq=change.seq, source_ts=change.source_ts)


def change_digest(change: Change) -> str:
    """What tells a redelivered change (same digest) from a sequence number reused for a
    different one."""
    return hashlib.sha256(encode(change.model_dump(mode="json"))).hexdigest()


def record_bytes(change: Change) -> bytes | None:
    """The record's JSON as the pipeline carries it (what the validator replays)."""
    return None if change.record is None else encode(change.record)


@dataclass(frozen=True)
class ChangePlan:
    """The changes of one message: those to send on (their position in the message with
    them), and those quarantined here."""

    accepted: list[tuple[int, Change]]
    quarantined: list[QuarantinedRecord]


def plan_changes(
    batch: ChangeBatch,
    *,
    max_depth: int,
    now: datetime | None = None,
    max_ahead_s: float | None = None,
    skip: frozenset[int] = frozenset(),
) -> ChangePlan:
    """Which changes to send on, and which to quarantine: a record the pipeline cannot carry
    faithfully (``unrepresentable_value``), or a time further than ``max_ahead_s`` past ``now``
    (``clock_ahead``: a client whose clock runs fast would pin its record, every later write
    of it losing). ``skip``: positions not to send at all (refused elsewhere)."""
    accepted: list[tuple[int, Change]] = []
    quarantined: list[QuarantinedRecord] = []
    limit = now + timedelta(seconds=max_ahead_s) if now is not None and max_ahead_s is not None else None
    for index, change in enumerate(batch.changes):
        if index in skip:
            continue
        why = None if change.record is None else jsonsafe.unrepresentable(change.record, max_depth=max_depth, path="record")
        reason = "unrepresentable_value"
        if why is None and limit is not None and change.source_ts > limit:
            why, reason = (
                f"source_ts is more than {max_ahead_s:.0f}s ahead of ingest's clock (SCHOOLMIG_MAX_CLOCK_AHEAD_S)",
                "clock_ahead",
            )
        if why is None:
            accepted.append((index, change))
            continue
        quarantined.append(
            QuarantinedRecord(
                school_id=batch.school_id,
                snapshot_id=meta(batch, change).change_id,
                domain=change.domain,
                index=index,
                legacy_id=change.record_id,
                stage=Stage.INGEST,
                reason=reason,
                message=f"{why}; the change is not carried",
                payload=None if reason == "unrepresentable_value" else change.record,
            )
        )
    return ChangePlan(accepted, quarantined)


def without(plan: ChangePlan, positions: set[int]) -> ChangePlan:
    return ChangePlan([(i, c) for i, c in plan.accepted if i not in positions], plan.quarantined)


def change_batches(
    batch: ChangeBatch, plan: ChangePlan, *, default_ts: datetime | None, timezone: str, max_records: int, max_bytes: int
) -> Iterator[WireBatch]:
    """The accepted changes as ``raw.batch`` messages per domain (parents first), then the
    quarantined ones; each change in exactly one message."""
    by_domain: dict[Domain, list[tuple[int, Change]]] = {}
    for index, change in plan.accepted:
        by_domain.setdefault(change.domain, []).append((index, change))
    for domain in sorted(by_domain, key=DOMAIN_LOAD_ORDER.index):
        group = by_domain[domain]
        first = meta(batch, group[0][1])
        head = header(
            "raw.batch", batch.school_id, first.change_id, domain, max(c.source_ts for _, c in group), default_ts, timezone
        )
        entries = [raw_entry(index, change.record_id, change.record, {}, change=meta(batch, change)) for index, change in group]
        for body, n in pack(head, entries, max_records=max_records, max_bytes=max_bytes):
            yield WireBatch("raw", domain, batch_key(batch.school_id, domain), body, n)
    by_quarantine: dict[Domain, list[bytes]] = {}
    for record in plan.quarantined:
        by_quarantine.setdefault(record.domain, []).append(quarantine_entry(record))
    for domain, entries in by_quarantine.items():
        for body, n in pack(quarantine_header(batch.school_id), entries, max_records=max_records, max_bytes=max_bytes):
            yield WireBatch("quarantine", domain, batch_key(batch.school_id, domain), body, n)


__all__ = ["ChangeOp", "ChangePlan", "change_batches", "change_digest", "meta", "plan_changes", "record_bytes", "without"]
