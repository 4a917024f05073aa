"""One validation run for one school: read, compare, judge. Used by the service and the CLI.

The order keeps it fast at scale: PostgreSQL computes each domain's checksum while a
worker process maps the backup (they run on different cores); only a domain whose checksum
differs has its per-record digests read, and only records whose digests differ have
their rows read and compared field by field.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from datetime import UTC, datetime
from functools import partial
from multiprocessing import get_context
from typing import Any, TypeVar

import asyncpg

from services.validator import queries
from services.validator.checks import (
    DomainFacts,
    compare_digests,
    diff_record,
    issue,
    validate,
)
from services.validator.digest import DOMAIN_TABLES, combine
from services.validator.expected import Expected, Merged, apply_changes, expected_state, merged
from shared.catalog.domains import ALL_DOMAINS, Domain
from shared.ledger import deletions, device_store, quarantine
from shared.ledger.accounting import DomainCounts, record_counts
from shared.ledger.devices import merge
from shared.platform.settings import Settings
from shared.wire.messages import CHANGE_ID_PREFIX, UNNAMED_DEVICE, DomainValidation, ValidationCompleted

log = logging.getLogger("schoolmig.validator")
MAX_DEPTH = Settings().max_nesting_depth  # as ingest reads records
T = TypeVar("T")

_TABLE_DOMAIN = {table: domain for domain, tables in DOMAIN_TABLES.items() for table, role in tables if role is None}


_workers: ProcessPoolExecutor | None = None


def worker_pool(size: int | None = None) -> ProcessPoolExecutor:
    """Processes for the CPU-bound part (mapping the backup), so that several schools use
    several cores and this process's event loop stays free for PostgreSQL and Kafka."""
    global _workers
    if _workers is None:
        _workers = ProcessPoolExecutor(max_workers=size or os.cpu_count() or 1, mp_context=get_context("spawn"))
    return _workers


async def in_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    global _workers
    pool = worker_pool()
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args, **kwargs))
    except BrokenExecutor:  # a worker died (e.g. out of memory): a fresh pool next time; retried (transient)
        if _workers is pool:
            _workers = None
            pool.shutdown(wait=False, cancel_futures=True)
        raise


async def validate_school(
    pool: asyncpg.Pool, school_id: str, snapshot_id: str, run_id: str, *, changes_until: datetime | None = None
) -> ValidationCompleted:
    """Compare the tables with the snapshot's verified backup plus the changes after it
    (``changes_until``: the cut, see ``ValidationRequested``)."""
    started = datetime.now(UTC)
    source = await queries.load_source(pool, school_id, snapshot_id)
    if source is None or not source.backup_ok:
        why = "no backup of this snapshot" if source is None else "the backup no longer matches its SHA-256"
        return _unverified(school_id, snapshot_id, run_id, started, why)

    checksums = {d: asyncio.create_task(queries.domain_checksum(pool, school_id, d)) for d in Domain}
    # The school's truth: every device's newest snapshot, merged by the devices' rule
    # (shared.ledger.devices), plus the changes after each record's version. A school whose
    # snapshots were never derived (older than device histories) has its one snapshot.
    states = {d: st for d, st in (await device_store.device_states(pool, school_id)).items() if st.snapshot_id}
    sources = {UNNAMED_DEVICE: source}
    if states:
        sources = {}
        for device, state in states.items():
            assert state.snapshot_id is not None
            found = source if state.snapshot_id == snapshot_id else await queries.load_source(pool, school_id, state.snapshot_id)
            if found is None or not found.backup_ok:
                why = (
                    f"the backup of snapshot {state.snapshot_id} (device {device or '(unnamed)'}) is missing or no longer matches"
                )
                for task in checksums.values():
                    task.cancel()
                return _unverified(school_id, snapshot_id, run_id, started, why)
            sources[device] = found

    def expect(keep_records: bool) -> Awaitable[list[Expected]]:
        return asyncio.gather(
            *(
                in_worker(
                    expected_state,
                    src.content,
                    src.manifest,
                    keep_records=keep_records,
                    max_depth=MAX_DEPTH,
                    default_ts=src.default_ts,
                    aliases=src.aliases,
                    timezone=src.timezone,
                )
                for src in sources.values()
            )
        )

    outcomes = merge(states) if states else None

    def combined(found: list[Expected]) -> tuple[Expected, Merged | None]:
        by_device = dict(zip(sources, found, strict=True))
        if outcomes is None:
            return by_device[UNNAMED_DEVICE], None
        school = merged(by_device, outcomes)
        own = next((e for d, e in by_device.items() if sources[d].manifest.snapshot_id == snapshot_id), None)
        school.expected.duplicate_ids = own.duplicate_ids if own is not None else {}
        return school.expected, school

    expected, school = combined(await expect(False))
    earliest = source.manifest.taken_at if school is None else _EARLIEST
    changes = await queries.changes_after(pool, school_id, earliest, changes_until or started)
    skipped = await quarantine.quarantined_changes(pool, school_id) if changes else frozenset()
    overlay = partial(
        apply_changes,
        changes=changes,
        school_id=school_id,
        taken_at=source.manifest.taken_at,
        default_ts=source.default_ts,
        timezone=source.timezone,
        skip=skipped,
        bounds=school.bounds if school is not None else None,
    )
    unsettled, decided = overlay(expected)
    if school is not None:
        for domain, unknown in school.unknown.items():
            unsettled[domain] |= unknown
    # A record whose snapshot write is held for a conflict of the data keeps what it held
    # before it, which the snapshot's expectation does not know: its fate is the conflict's
    # (reported below, critical until accepted), not compared here. (A held change is not
    # replayed: its record is compared as it stands without it.)
    conflicts = await quarantine.data_conflicts(
        pool, school_id, [snapshot_id, *(src.manifest.snapshot_id for src in sources.values())]
    )
    conflicted: dict[Domain, set[str]] = {d: set() for d in Domain}
    for conflict in conflicts:
        if not conflict["snapshot_id"].startswith(CHANGE_ID_PREFIX):
            conflicted[Domain(conflict["domain"])].add(conflict["legacy_id"])
            unsettled[Domain(conflict["domain"])].add(conflict["legacy_id"])
    full: Expected | None = None  # the records themselves, only if a difference needs them
    counts = await record_counts(pool, school_id, snapshot_id) or {}
    quarantined = await _quarantined(pool, school_id, snapshot_id, sources, school)
    reasons = await quarantine.quarantine_reasons(pool, school_id, snapshot_id)
    deleted = await deletions.deleted_ids(pool, school_id)

    facts: dict[Domain, DomainFacts] = {}
    for domain in Domain:
        # (a record the snapshot quarantined that a change made whole again is compared)
        digests = {
            k: d
            for k, d in expected.digests[domain].items()
            if (k not in quarantined[domain] or k in decided[domain]) and k not in conflicted[domain]
        }
        checksum, records = await checksums[domain]
        f = DomainFacts(
            counts.get(domain, DomainCounts()),
            expected=len(digests),
            quarantine_reasons=reasons.get(domain, Counter()),
            duplicate_ids=expected.duplicate_ids.get(domain, []),
        )
        if checksum != combine(digests.values()) or records != len(digests) or unsettled[domain]:
            actual = await queries.record_digests(pool, school_id, domain)
            # Rows of records a newer snapshot or a change deleted stay in the tables, marked: not
            # unexpected. Records changed after the cut are not compared: either state is right.
            actual = {
                k: v for k, v in actual.items() if (k not in deleted[domain] or k in digests) and k not in unsettled[domain]
            }
            f.comparison = compare_digests(digests, actual)
            if f.comparison.differing:
                if full is None:
                    full, _ = combined(await expect(True))
                    overlay(full)
                assert full.records is not None
                rows = await queries.record_rows(pool, school_id, domain, f.comparison.differing)
                f.diffs = {k: diff_record(domain, full.records[domain][k], rows.get(k, [])) for k in f.comparison.differing}
        facts[domain] = f

    for key in await queries.foreign_keys(pool):
        for legacy_id, ref in await queries.broken_references(pool, school_id, key):
            facts[_TABLE_DOMAIN.get(key.table, Domain.STUDENTS)].broken_references.append(
                (legacy_id, f"{key.table}.{key.column}", ref)
            )
    for table, columns in await queries.unique_keys(pool):
        for ids in await queries.duplicated_keys(pool, school_id, table, columns):
            domain = _TABLE_DOMAIN.get(table, Domain.STUDENTS)
            facts[domain].duplicated_keys.append((f"{table}({', '.join(columns)})", ids))
    for domain, legacy_ids in (await quarantine.orphans_with_parents(pool, school_id, snapshot_id)).items():
        facts[domain].orphans_with_parents = legacy_ids
    for conflict in conflicts:
        facts[Domain(conflict["domain"])].data_conflicts.append(conflict)
    for finding in await queries.name_mismatches(pool, school_id, snapshot_id):
        facts[Domain(finding["domain"])].name_mismatches.append(finding)

    ok, domains = validate(facts)
    return ValidationCompleted(
        run_id=run_id,
        school_id=school_id,
        snapshot_id=snapshot_id,
        ok=ok,
        domains=domains,
        started_at=started,
        finished_at=datetime.now(UTC),
    )


#: Every change of the school, when its devices are merged (each record has its own bound).
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


def _unverified(school_id: str, snapshot_id: str, run_id: str, started: datetime, why: str) -> ValidationCompleted:
    """A run that could not compare: a backup it needs is missing or no longer verifies."""
    domains = [
        DomainValidation(domain=d, total_records=0, valid_records=0, issues=[issue("backup_unverified", d, why)])
        for d in ALL_DOMAINS
    ]
    return ValidationCompleted(
        run_id=run_id,
        school_id=school_id,
        snapshot_id=snapshot_id,
        ok=False,
        domains=domains,
        started_at=started,
        finished_at=datetime.now(UTC),
    )


async def _quarantined(
    pool: asyncpg.Pool, school_id: str, snapshot_id: str, sources: dict[str, queries.Source], school: Merged | None
) -> dict[Domain, set[str]]:
    """Records not to expect in the tables for being in quarantine: the snapshot's; with the
    devices merged, each record's winning device's snapshot's."""
    if school is None:
        return {d: set(ids) for d, ids in (await quarantine.quarantined_ids(pool, school_id, snapshot_id)).items()}
    per_device = {d: await quarantine.quarantined_ids(pool, school_id, src.manifest.snapshot_id) for d, src in sources.items()}
    out: dict[Domain, set[str]] = {d: set() for d in Domain}
    for domain in Domain:
        for legacy_id in school.expected.digests[domain]:
            device = school.winner.get((domain, legacy_id))  # (None: a change made it, no snapshot holds it)
            if device is not None and legacy_id in per_device[device][domain]:
                out[domain].add(legacy_id)
    return out
