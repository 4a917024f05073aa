"""The loader's write path: one transaction per batch, parents before children.

Per table: COPY the batch into a temporary staging table, then one
``INSERT … SELECT … ON CONFLICT (id) DO UPDATE … WHERE target.source_ts <= new.source_ts``,
so redelivered or re-ordered writes never overwrite a newer row (last writer wins).
The ledger ``migration.loaded_records`` is written in the same transaction: a record
counts as loaded exactly when its rows are committed.

A record whose parent row (in another record, on another topic) is not there yet is
parked in ``migration.parked_records`` (see ``parking.py``), in the same transaction, and
written by the transaction that brings its parent. Foreign-key errors never loop. Each
transaction holds its schools' write locks (``shared.db.lock_schools``) before it looks at
parents or parked records, so with several loaders a child is never parked in a snapshot
that misses its parent's commit (which would leave it parked for good).

A step the database rejects for good is split in halves, each in a savepoint, until the
records it rejects are alone; those go to quarantine with the database's message, the
rest land in the same transaction. Transient
failures (connection lost, restart, deadlock) are retried after 1 s, 5 s, 15 s (with
jitter), then raised so the consumer rewinds and the batch is delivered again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from services.loader.convert import ConversionCache, rows_by_table
from services.loader.parking import (
    RecordKey,
    Ref,
    newest_per_record,
    plan,
    provides,
    record_key,
    references,
)
from shared.db import lock_schools, with_retries
from shared.faults import classify
from shared.mapping import reverse_record
from shared.messages import MappedRecord, QuarantinedRecord, Stage, quarantined
from shared.quarantine import store_quarantine
from shared.tables import LOAD_ORDER, PRIMARY_TABLE, TableSpec
from shared.versions import Version, is_delete, snapshot_version, version_of, wins

log = logging.getLogger("schoolmig.loader")
Cache = ConversionCache  # converted rows per record, for one load


def _refused(exc: Exception) -> bool:
    """Whatever a batch fails with that is not the infrastructure's fault (``shared.faults``)
    is some record's (the database or the client refusing a value, a conversion meeting one
    nobody foresaw): the batch is bisected until that record stands alone and is quarantined.
    The infrastructure's faults are raised, and retried."""
    return classify(exc) == "message"


_DEFAULTED = {"created_at", "updated_at"}  # NULL from a record without timestamps: now()


def _upsert_sql(spec: TableSpec) -> str:
    # Identifiers come from the fixed table catalogue, never from input; values go via COPY.
    cols = ", ".join(spec.column_names)
    selected = ", ".join(f"coalesce({c}, now())" if c in _DEFAULTED else c for c in spec.column_names)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in spec.column_names if c not in ("id", "created_at"))
    return (
        f"INSERT INTO {spec.name} AS t ({cols}) SELECT {selected} FROM _stage_{spec.name} "
        f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE t.source_ts <= EXCLUDED.source_ts"
    )


# The stage is emptied in the same round trip, not only at commit: un-parking writes again
# in the same transaction.
_UPSERTS = {spec.name: f"{_upsert_sql(spec)}; DELETE FROM _stage_{spec.name}" for spec in LOAD_ORDER}
# Staging tables have the target's columns and no constraints (CREATE TABLE AS copies none):
# the target's constraints judge each row at the upsert.
_STAGING = "; ".join(
    f"CREATE TEMP TABLE IF NOT EXISTS _stage_{s.name} ON COMMIT DELETE ROWS AS SELECT * FROM {s.name} WITH NO DATA"
    for s in LOAD_ORDER
)
# Marks the transaction as the migration's (the updated_at and obligation-status triggers
# keep the source's values), and makes sure this connection has its staging tables.
_PREPARE = "SET LOCAL schoolmig.loading = 'on'; " + _STAGING
_LEDGER = """
INSERT INTO migration.loaded_records (school_id, domain, legacy_id, snapshot_id, record_index, source_ts)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[])
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET snapshot_id = EXCLUDED.snapshot_id, record_index = EXCLUDED.record_index,
       source_ts = EXCLUDED.source_ts, loaded_at = now()
 WHERE migration.loaded_records.source_ts <= EXCLUDED.source_ts
"""
# A parked record replaces an older parked version of itself, never a newer one. (An upsert:
# deleting and re-inserting in one statement would collide, both parts seeing one snapshot.)
_PARK = """
INSERT INTO migration.parked_records (school_id, domain, legacy_id, snapshot_id, record_index, source_ts, record,
                                      client_id, seq)
SELECT s, d, l, sn, i, ts, r::jsonb, c, q
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], $8::text[],
              $9::bigint[]) AS p (s, d, l, sn, i, ts, r, c, q)
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET snapshot_id = EXCLUDED.snapshot_id, record_index = EXCLUDED.record_index, source_ts = EXCLUDED.source_ts,
       record = EXCLUDED.record, client_id = EXCLUDED.client_id, seq = EXCLUDED.seq, parked_at = now()
 WHERE (migration.parked_records.source_ts, migration.parked_records.client_id, migration.parked_records.seq)
    <= (EXCLUDED.source_ts, EXCLUDED.client_id, EXCLUDED.seq)
RETURNING school_id, domain, legacy_id
"""
# The versions each record holds now (``shared.versions``): its content's and its deletion's
# (``migration.record_versions``), and its ledger line's snapshot time.
_CURRENT = """
SELECT k.s AS school_id, k.d AS domain, k.l AS legacy_id,
       v.live_ts, v.live_client, v.live_seq, v.deleted_ts, v.deleted_client, v.deleted_seq, l.source_ts AS l_ts
  FROM unnest($1::text[], $2::text[], $3::text[]) AS k (s, d, l)
  LEFT JOIN migration.record_versions v ON (v.school_id, v.domain, v.legacy_id) = (k.s, k.d, k.l)
  LEFT JOIN migration.loaded_records l ON (l.school_id, l.domain, l.legacy_id) = (k.s, k.d, k.l)
 WHERE v.school_id IS NOT NULL OR l.school_id IS NOT NULL
"""
_HAS_VERSIONS = "SELECT EXISTS (SELECT 1 FROM migration.record_versions WHERE school_id = ANY($1::text[]))"
# A change's content version, over an older one (a new row for a record only snapshots wrote).
_LIVE = """
INSERT INTO migration.record_versions AS v (school_id, domain, legacy_id, live_ts, live_client, live_seq, live_by)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[], $7::text[])
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET live_ts = EXCLUDED.live_ts, live_client = EXCLUDED.live_client, live_seq = EXCLUDED.live_seq, live_by = EXCLUDED.live_by
 WHERE v.live_ts IS NULL OR (v.live_ts, v.live_client, v.live_seq) < (EXCLUDED.live_ts, EXCLUDED.live_client, EXCLUDED.live_seq)
"""
# A snapshot's record written where a change or deletion was: its version goes on that row
# (a record only snapshots wrote has its version in the ledger line, and no row here).
_LIVE_SNAPSHOT = """
UPDATE migration.record_versions v
   SET live_ts = k.ts, live_client = '', live_seq = 0, live_by = k.by
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS k (s, d, l, ts, by)
 WHERE (v.school_id, v.domain, v.legacy_id) = (k.s, k.d, k.l)
   AND (v.live_ts IS NULL OR (v.live_ts, v.live_client, v.live_seq) < (k.ts, '', 0::bigint))
"""
# A deletion's version, over an older one.
_TOMBSTONE = """
INSERT INTO migration.record_versions AS v
       (school_id, domain, legacy_id, deleted_ts, deleted_client, deleted_seq, deleted_by, deleted_at)
SELECT s, d, l, ts, c, q, by, now()
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[], $7::text[])
       AS k (s, d, l, ts, c, q, by)
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET deleted_ts = EXCLUDED.deleted_ts, deleted_client = EXCLUDED.deleted_client, deleted_seq = EXCLUDED.deleted_seq,
       deleted_by = EXCLUDED.deleted_by, deleted_at = now()
 WHERE v.deleted_ts IS NULL
    OR (v.deleted_ts, v.deleted_client, v.deleted_seq) < (EXCLUDED.deleted_ts, EXCLUDED.deleted_client, EXCLUDED.deleted_seq)
"""
# Of these changes, the ones older than their school's newest snapshot whose deletions are
# marked (the coordinator's mark_deleted), of a record that snapshot does not have: arriving
# late, they are deleted by it, as they would have been had they come before it.
_DELETED_BY_SNAPSHOT = """
WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[])
                  AS k (s, d, l, ts, c, q)),
marked AS (SELECT DISTINCT ON (school_id) school_id, snapshot_id, taken_at FROM migration.snapshots
            WHERE school_id IN (SELECT s FROM k) AND deletions_marked_at IS NOT NULL
            ORDER BY school_id, taken_at DESC, snapshot_id DESC)
SELECT k.s, k.d, k.l, m.taken_at AS ts, ''::text AS c, 0::bigint AS q, m.snapshot_id AS by
  FROM k JOIN marked m ON m.school_id = k.s
 WHERE (k.ts, k.c, k.q) < (m.taken_at, '', 0::bigint)
   AND NOT EXISTS (SELECT 1 FROM migration.loaded_records l
                    WHERE (l.school_id, l.domain, l.legacy_id, l.snapshot_id) = (k.s, k.d, k.l, m.snapshot_id))
   AND NOT EXISTS (SELECT 1 FROM migration.quarantine q
                    WHERE (q.school_id, q.snapshot_id, q.domain, q.legacy_id) = (k.s, m.snapshot_id, k.d, k.l))
"""
# A write judged stale is not waiting anywhere either: its parked self (or an older one) goes.
_FORGET_STALE = """
DELETE FROM migration.parked_records p
 USING unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[]) AS k (s, d, l, ts, c, q)
 WHERE (p.school_id, p.domain, p.legacy_id) = (k.s, k.d, k.l) AND (p.source_ts, p.client_id, p.seq) <= (k.ts, k.c, k.q)
RETURNING p.school_id, p.domain, p.legacy_id, p.snapshot_id, p.record_index, p.source_ts, p.client_id
"""
# What a (re)parked record waits for is exactly its current missing references.
_RESET_REFS = """
DELETE FROM migration.parked_refs r USING unnest($1::text[], $2::text[], $3::text[]) AS k (school_id, domain, legacy_id)
 WHERE (r.school_id, r.domain, r.legacy_id) = (k.school_id, k.domain, k.legacy_id)
"""
_PARK_REFS = """
INSERT INTO migration.parked_refs (school_id, domain, legacy_id, ref_table, ref_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::uuid[])
ON CONFLICT DO NOTHING
"""
# Written records are no longer parked, nor quarantined as orphans.
_UNPARK = """
WITH written AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[])
         AS w (school_id, domain, legacy_id, ts, client_id, seq)),
unparked AS (
  DELETE FROM migration.parked_records p USING written w
   WHERE (p.school_id, p.domain, p.legacy_id) = (w.school_id, w.domain, w.legacy_id)
     AND (p.source_ts, p.client_id, p.seq) <= (w.ts, w.client_id, w.seq)
  RETURNING p.school_id, p.domain, p.legacy_id, p.snapshot_id, p.record_index, p.source_ts, p.client_id),
orphans AS (
  DELETE FROM migration.quarantine q USING unparked u
   WHERE (q.school_id, q.snapshot_id, q.domain, q.legacy_id) = (u.school_id, u.snapshot_id, u.domain, u.legacy_id)
     AND q.reason = 'orphaned_reference')
SELECT * FROM unparked
"""
# What a newer parked write displaces: an older parked snapshot record of the same record.
_DISPLACED = """
SELECT p.school_id, p.domain, p.legacy_id, p.snapshot_id, p.record_index, p.source_ts, p.client_id
  FROM migration.parked_records p
  JOIN unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[]) AS k (s, d, l, ts, c, q)
    ON (p.school_id, p.domain, p.legacy_id) = (k.s, k.d, k.l)
 WHERE (p.source_ts, p.client_id, p.seq) < (k.ts, k.c, k.q)
"""
_FORGET_PARKED = """
DELETE FROM migration.parked_records p
 USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS f (school_id, domain, legacy_id, snapshot_id)
 WHERE (p.school_id, p.domain, p.legacy_id, p.snapshot_id) = (f.school_id, f.domain, f.legacy_id, f.snapshot_id)
"""
# A written row satisfies the references that waited for it; a record with none left may go.
# (Two statements: a data-modifying CTE's effects are invisible to its own statement.)
_SATISFIED = """
DELETE FROM migration.parked_refs r USING unnest($1::text[], $2::uuid[]) AS w (ref_table, ref_id)
 WHERE (r.ref_table, r.ref_id) = (w.ref_table, w.ref_id)
RETURNING r.school_id, r.domain, r.legacy_id
"""
_READY_TO_GO = """
SELECT p.record::text AS record
  FROM migration.parked_records p
  JOIN unnest($1::text[], $2::text[], $3::text[]) AS k (school_id, domain, legacy_id)
    ON (p.school_id, p.domain, p.legacy_id) = (k.school_id, k.domain, k.legacy_id)
 WHERE NOT EXISTS (SELECT 1 FROM migration.parked_refs r
                    WHERE (r.school_id, r.domain, r.legacy_id) = (p.school_id, p.domain, p.legacy_id))
"""

# Of these (school, snapshot, parent domain), the ones whose records may still be on their
# way: the school's newest snapshot (a newer one takes its records over, so an older one's
# counts may never add up), with fewer records accounted for (loaded, quarantined, or parked
# themselves) than its audit counted. The audit is stored before ingest fans a snapshot out;
# a snapshot without one (no such snapshot) is no reason to wait.
_IN_FLIGHT = """
SELECT k.school_id, k.snapshot_id, k.domain
  FROM unnest($1::text[], $2::text[], $3::text[]) AS k (school_id, snapshot_id, domain)
  JOIN migration.audits a USING (school_id, snapshot_id)
 WHERE NOT EXISTS (SELECT 1 FROM migration.audits newer WHERE newer.school_id = k.school_id AND newer.created_at > a.created_at)
   AND coalesce((a.summary -> 'source_counts' ->> k.domain)::int, 0)
     > (SELECT count(*) FROM migration.loaded_records l
         WHERE (l.school_id, l.snapshot_id, l.domain) = (k.school_id, k.snapshot_id, k.domain))
     + (SELECT count(*) FROM migration.quarantine q
         WHERE (q.school_id, q.snapshot_id, q.domain) = (k.school_id, k.snapshot_id, k.domain))
     + (SELECT count(*) FROM migration.parked_records p
         WHERE (p.school_id, p.snapshot_id, p.domain) = (k.school_id, k.snapshot_id, k.domain)
           AND NOT EXISTS (SELECT 1 FROM migration.quarantine q2
                            WHERE (q2.school_id, q2.snapshot_id, q2.domain, q2.record_index)
                                = (p.school_id, p.snapshot_id, p.domain, p.record_index)))
"""
_DOMAIN_OF_TABLE = {table: domain.value for domain, table in PRIMARY_TABLE.items()}
Awaited = tuple[str, str, str]  # (school, snapshot, parent domain) a child waits for


class Writer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.tally: Counter[str] = Counter()
        """The last load's writes judged by version (``shared.versions``): applied, deleted,
        revived, superseded; for the metrics, once its transaction committed."""

    async def parents_on_their_way(self, groups: Sequence[Sequence[MappedRecord]]) -> dict[int, set[Awaited]]:
        """Per group (a poll's message) that holds a record whose missing parent may still be
        on its way (not in the tables, not in these groups, and its domain in that snapshot
        not all accounted for yet): what it awaits, as (school, snapshot, parent domain).
        See ``deferral.py``. A parent whose domain is done will never come: that child is
        no reason to wait, it is parked (then quarantined as an orphan)."""
        records = [r for group in groups for r in group]
        needing = [r for r in records if references(r)]
        if not needing:
            return {}
        given: set[Ref] = set().union(*(provides(r) for r in records))
        async with self.pool.acquire() as conn:
            known = given | await _existing(conn, needing)
            missing = {  # per group: the (school, snapshot, domain) of each parent it misses
                i: {
                    (r.school_id, r.snapshot_id, _DOMAIN_OF_TABLE[table])
                    for r in group
                    for table, row in references(r)
                    if (table, row) not in known
                }
                for i, group in enumerate(groups)
            }
            keys = set().union(*missing.values())
            if not keys:
                return {}
            in_flight = {tuple(r) for r in await conn.fetch(_IN_FLIGHT, *map(list, zip(*keys, strict=True)))}
        return {i: awaited for i, wanted in missing.items() if (awaited := wanted & in_flight)}

    async def load(self, records: Sequence[MappedRecord]) -> list[QuarantinedRecord]:
        """Write a batch in one transaction; return the records the database refused (quarantined)."""
        # Snapshot records first, then changes, each its own step in the one transaction: a
        # change judges itself against what the snapshot's record left, and a snapshot's
        # record is written (and counted for its snapshot) whatever becomes of a change of it.
        steps = [
            step
            for step in (
                newest_per_record(r for r in records if r.change is None),
                newest_per_record(r for r in records if r.change is not None),
            )
            if step
        ]
        batch = [r for step in steps for r in step]
        schools = {r.school_id for r in batch}
        refused: list[QuarantinedRecord] = []
        cache: Cache = {}
        tally = self.tally = Counter()

        async def attempt() -> None:
            refused.clear()
            tally.clear()
            async with self.pool.acquire() as conn:
                try:  # the common case, a clean batch: one transaction, no savepoints
                    async with conn.transaction():
                        await conn.execute(_PREPARE)
                        await lock_schools(conn, schools)
                        for step in steps:
                            await _write_steps(conn, step, cache, tally)
                    return
                except Exception as exc:
                    if not _refused(exc):
                        raise
                tally.clear()
                async with conn.transaction():  # refused somewhere: again, isolating with savepoints
                    await conn.execute(_PREPARE)
                    await lock_schools(conn, schools)
                    for step in steps:
                        await _write_isolated(conn, step, refused, cache, tally)
                    if refused:  # a refused record is quarantined, so no longer waits anywhere
                        await conn.execute(
                            _FORGET_PARKED,
                            [r.school_id for r in refused],
                            [r.domain.value for r in refused],
                            [r.legacy_id for r in refused],
                            [r.snapshot_id for r in refused],
                        )

        if batch:
            await with_retries(attempt, "load batch")
            await self.quarantine(refused)
        return refused

    async def quarantine(self, records: Sequence[QuarantinedRecord]) -> None:
        await store_quarantine(self.pool, records)


async def _write_steps(conn: asyncpg.Connection, records: list[MappedRecord], cache: Cache, tally: Counter[str]) -> None:
    """Write ``records``, then whatever was waiting for them, and so on down (no savepoints)."""
    while records:
        records, versioned = await _judge(conn, records, tally)
        result = plan(records, await _existing(conn, records))
        await _park(conn, result.parked)
        await _write_rows(conn, result.ready, cache, direct=True, versioned=versioned)
        records = await _unparkable(conn, [ref for r in result.ready for ref in provides(r)])


async def _judge(conn: asyncpg.Connection, records: list[MappedRecord], tally: Counter[str]) -> tuple[list[MappedRecord], bool]:
    """The records whose content to write: those whose version is greater than the content
    each record holds now (``shared.versions``). A delete is applied here: its tombstone is
    kept if it is the greatest deletion, and the rows stay (a soft delete, whichever came
    first, so that what references them is written the same in any order). A snapshot's
    record that lost still counts as loaded for its snapshot (its ledger line); a change that
    lost is dropped. Returns (records, whether their schools have versions at all): a school
    only ever bulk-loaded from snapshots has none, and pays one query for this."""
    if not records:
        return records, False
    if not any(r.change is not None for r in records):
        if not await conn.fetchval(_HAS_VERSIONS, sorted({r.school_id for r in records})):
            return records, False
    keys = [record_key(r) for r in records]
    content: dict[RecordKey, Version] = {}
    deletion: dict[RecordKey, Version] = {}
    for row in await conn.fetch(_CURRENT, *map(list, zip(*keys, strict=True))):
        key = (row["school_id"], row["domain"], row["legacy_id"])
        held = [Version(row["live_ts"], row["live_client"], row["live_seq"])] if row["live_ts"] is not None else []
        held += [snapshot_version(row["l_ts"])] if row["l_ts"] is not None else []
        if held:
            content[key] = max(held)
        if row["deleted_ts"] is not None:
            deletion[key] = Version(row["deleted_ts"], row["deleted_client"], row["deleted_seq"])
    keep: list[MappedRecord] = []
    stale: list[MappedRecord] = []
    tombstones: list[MappedRecord] = []
    for record, key in zip(records, keys, strict=True):
        mine, has, gone = version_of(record), content.get(key), deletion.get(key)
        visible = has is not None and (gone is None or has > gone)
        if is_delete(record):
            if gone is None or mine > gone:
                tombstones.append(record)
            tally["deleted" if (gone is None or mine > gone) and (has is None or mine > has) else "superseded"] += 1
        elif wins(record, has):
            keep.append(record)
            tally[
                ("revived" if gone is not None and not visible else "applied") if gone is None or mine > gone else "superseded"
            ] += 1
        else:
            stale.append(record)
            tally["superseded"] += 1
    await _stale(conn, stale)
    if tombstones:
        await conn.execute(_TOMBSTONE, *_version_columns(tombstones))
    if changes := [r for r in keep if r.change is not None]:
        if late := await conn.fetch(_DELETED_BY_SNAPSHOT, *_version_columns(changes)[:6]):
            await conn.execute(_TOMBSTONE, *map(list, zip(*late, strict=True)))
    return keep, True


async def _stale(conn: asyncpg.Connection, stale: list[MappedRecord]) -> None:
    """Writes that lost to a newer version: nothing of theirs is written, nothing waits for
    them (their parked selves go), and a snapshot's record still counts as loaded for its
    snapshot (its ledger line), or that snapshot's counts would never add up."""
    if stale:
        await _ledger(conn, [r for r in stale if r.change is None])
        await _ledger_parked(conn, await conn.fetch(_FORGET_STALE, *_version_columns(stale)[:6]))


async def _ledger_parked(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> None:
    """Parked snapshot records a newer write took the place of: they count as loaded for their
    snapshot (superseded), or its counts would never add up. (A parked change just goes.)"""
    if rows := [r for r in rows if r["client_id"] == ""]:
        await conn.execute(
            _LEDGER,
            [r["school_id"] for r in rows],
            [r["domain"] for r in rows],
            [r["legacy_id"] for r in rows],
            [r["snapshot_id"] for r in rows],
            [r["record_index"] for r in rows],
            [r["source_ts"] for r in rows],
        )


def _version_columns(records: list[MappedRecord]) -> tuple[list[Any], ...]:
    versions = [version_of(r) for r in records]
    return (
        [r.school_id for r in records],
        [r.domain.value for r in records],
        [r.legacy_id for r in records],
        [v.source_ts for v in versions],
        [v.client_id for v in versions],
        [v.seq for v in versions],
        [r.snapshot_id for r in records],
    )


async def _ledger(conn: asyncpg.Connection, records: list[MappedRecord]) -> None:
    """The snapshot records' ledger lines: each counts as loaded for its snapshot."""
    if records:
        await conn.execute(
            _LEDGER,
            [r.school_id for r in records],
            [r.domain.value for r in records],
            [r.legacy_id for r in records],
            [r.snapshot_id for r in records],
            [r.index for r in records],
            [r.source_ts for r in records],
        )


async def _write_isolated(
    conn: asyncpg.Connection,
    records: list[MappedRecord],
    refused: list[QuarantinedRecord],
    cache: Cache,
    tally: Counter[str],
) -> None:
    """Write ``records`` in a savepoint, then whatever was waiting for them, and so on down.

    A step the database refuses is split in halves, each in its own savepoint, until the
    refused record stands alone: it is quarantined, the rest land, and a poison record
    reached by un-parking never fails the write that released it.
    """
    if not records:
        return
    judged: Counter[str] = Counter()
    try:
        async with conn.transaction():  # a savepoint
            kept, versioned = await _judge(conn, records, judged)
            result = plan(kept, await _existing(conn, kept))
            await _park(conn, result.parked)
            await _write_rows(conn, result.ready, cache, versioned=versioned)
    except Exception as exc:
        if not _refused(exc):
            raise
        if len(records) == 1:
            refused.append(_refusal(records[0], exc))
            return
        half = len(records) // 2
        await _write_isolated(conn, records[:half], refused, cache, tally)
        await _write_isolated(conn, records[half:], refused, cache, tally)
        return
    tally.update(judged)  # counted once its savepoint held
    await _write_isolated(
        conn, await _unparkable(conn, [ref for r in result.ready for ref in provides(r)]), refused, cache, tally
    )


async def _write_rows(
    conn: asyncpg.Connection, records: list[MappedRecord], cache: Cache, *, direct: bool = False, versioned: bool = False
) -> None:
    """COPY each table's rows into staging and upsert them, parents first.

    With ``direct``, a table none of whose rows exist yet (the common case of a first bulk
    load) takes PostgreSQL's fastest path instead: COPY straight into the table, which is
    what the upsert would have done row by row. Were another writer to insert one of those
    ids meanwhile, the COPY fails on the primary key, and the caller writes the batch again
    with upserts.
    """
    if not records:
        return
    tables = rows_by_table(records, cache)
    present = [spec for spec in LOAD_ORDER if tables.get(spec.name)]
    fresh = await _fresh_tables(conn, present, tables) if direct else set()
    for spec in present:
        rows = tables[spec.name]
        if spec.name in fresh:
            await conn.copy_records_to_table(spec.name, records=rows, columns=spec.column_names)
        else:
            await conn.copy_records_to_table(f"_stage_{spec.name}", records=rows, columns=spec.column_names)
            await conn.execute(_UPSERTS[spec.name])
    snapshots = [r for r in records if r.change is None]
    await _ledger(conn, snapshots)
    if changes := [r for r in records if r.change is not None]:
        s_, d, l, ts, c, q, by = _version_columns(changes)
        await conn.execute(_LIVE, s_, d, l, ts, c, q, by)
    if versioned and snapshots:  # where a change or deletion was, the version moves on
        s_, d, l, ts, _, _, by = _version_columns(snapshots)
        await conn.execute(_LIVE_SNAPSHOT, s_, d, l, ts, by)
    await _ledger_parked(conn, await conn.fetch(_UNPARK, *_version_columns(records)[:6]))


_TIMESTAMP_POSITIONS = {
    spec.name: tuple(i for i, name in enumerate(spec.column_names) if name in _DEFAULTED) for spec in LOAD_ORDER
}


async def _fresh_tables(conn: asyncpg.Connection, specs: list[TableSpec], tables: dict[str, list[tuple]]) -> set[str]:
    """The tables that hold none of the batch's ids (one round trip), and whose rows need no
    defaulted timestamp (the upsert's ``coalesce``)."""
    candidates = [
        spec for spec in specs if not any(row[i] is None for row in tables[spec.name] for i in _TIMESTAMP_POSITIONS[spec.name])
    ]
    if not candidates:
        return set()
    # Table names come from the fixed catalogue; the ids are parameters.
    probes = ", ".join(f"EXISTS (SELECT 1 FROM {spec.name} WHERE id = ANY(${n}::uuid[]))" for n, spec in enumerate(candidates, 1))
    found = await conn.fetchrow(f"SELECT {probes}", *([row[0] for row in tables[spec.name]] for spec in candidates))
    return {spec.name for spec, exists in zip(candidates, found, strict=True) if not exists}


async def _existing(conn: asyncpg.Connection, records: list[MappedRecord]) -> set[Ref]:
    """The referenced rows that already exist in the database."""
    wanted: dict[str, set[str]] = {}
    for record in records:
        for table, row in references(record):
            wanted.setdefault(table, set()).add(row)
    found: set[Ref] = set()
    for table, ids in wanted.items():
        # The table name comes from the fixed catalogue; ids are parameters.
        rows = await conn.fetch(f"SELECT id::text FROM {table} WHERE id = ANY($1::uuid[])", list(ids))
        found.update((table, r["id"]) for r in rows)
    return found


async def _park(conn: asyncpg.Connection, parked: list[tuple[MappedRecord, set[Ref]]]) -> None:
    if not parked:
        return
    await _ledger_parked(conn, await conn.fetch(_DISPLACED, *_version_columns([r for r, _ in parked])[:6]))
    kept = await conn.fetch(
        _PARK,
        [r.school_id for r, _ in parked],
        [r.domain.value for r, _ in parked],
        [r.legacy_id for r, _ in parked],
        [r.snapshot_id for r, _ in parked],
        [r.index for r, _ in parked],
        [r.source_ts for r, _ in parked],
        [r.model_dump_json() for r, _ in parked],
        [version_of(r).client_id for r, _ in parked],
        [version_of(r).seq for r, _ in parked],
    )
    now_parked = {(k["school_id"], k["domain"], k["legacy_id"]) for k in kept}  # a newer parked version stays
    # A snapshot's record a newer parked write (a change) stands in front of: superseded, counted.
    await _ledger(conn, [r for r, _ in parked if r.change is None and record_key(r) not in now_parked])
    if now_parked:
        await conn.execute(_RESET_REFS, *map(list, zip(*now_parked, strict=True)))
    refs = [(r, table, row) for r, missing in parked if record_key(r) in now_parked for table, row in sorted(missing)]
    await conn.execute(
        _PARK_REFS,
        [r.school_id for r, _, _ in refs],
        [r.domain.value for r, _, _ in refs],
        [r.legacy_id for r, _, _ in refs],
        [table for _, table, _ in refs],
        [row for _, _, row in refs],
    )
    log.debug("parked %d record(s) waiting for their parents", len(parked))


async def _unparkable(conn: asyncpg.Connection, written: list[Ref]) -> list[MappedRecord]:
    """Parked records whose last missing parent is among the rows just written."""
    if not written:
        return []
    satisfied = await conn.fetch(_SATISFIED, [t for t, _ in written], [r for _, r in written])
    keys = {(k["school_id"], k["domain"], k["legacy_id"]) for k in satisfied}
    if not keys:
        return []
    rows = await conn.fetch(_READY_TO_GO, *map(list, zip(*keys, strict=True)))
    return [MappedRecord.model_validate_json(r["record"]) for r in rows]


def _refusal(record: MappedRecord, exc: Exception) -> QuarantinedRecord:
    # The database's message can quote values (an email in a unique violation): it goes to the
    # quarantine table with the payload, never to logs or metrics.
    return quarantined(
        record,
        stage=Stage.LOADER,
        reason=f"db_{type(exc).__name__.removesuffix('Error').lower()}",
        message=f"{getattr(exc, 'sqlstate', 'client')}: {getattr(exc, 'message', str(exc))} {getattr(exc, 'detail', '') or ''}".strip(),
        payload=_source_of(record),
    )


def _source_of(record: MappedRecord) -> object:
    """The source record, exactly (its rows mapped back), or None when even that fails on
    what the record holds (the verified backup keeps it; the message says why it is here)."""
    try:
        return reverse_record(record.domain, [(row.table, row.values) for row in record.rows])
    except Exception:
        return None
