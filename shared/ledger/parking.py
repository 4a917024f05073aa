"""Records waiting for a parent: parking, un-parking, and the sweep of a complete snapshot.

A record whose parent row (in another record, on another topic) is not written yet is
parked whole in ``migration.parked_records``, with the references it waits for in
``migration.parked_refs``, and written by the transaction that brings its parent. Of two
parked writes of one record the greater version stays (``shared.ledger.versions``); a
parked snapshot record a newer write takes the place of counts as loaded for its snapshot.
The loader parks and un-parks; the coordinator sweeps (:func:`sweep`). Every call is made
inside the caller's transaction, under the school's write lock (``shared.platform.db``), but the
sweep, which is a transaction of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg

from shared.catalog.tables import ref_exists_sql
from shared.ledger import liveness, uniques
from shared.ledger.keys import RecordKey, Ref, record_key
from shared.ledger.quarantine import insert_quarantine
from shared.ledger.records import KEYED, VERSIONED, mark_loaded, mark_loaded_rows, version_columns
from shared.ledger.uniques import WAIT_PREFIX, Held, is_wait
from shared.ledger.versions import SNAPSHOT_CLIENT, SqlVersion, sql_is_change, sql_text, version_of
from shared.mapping import reverse_record
from shared.platform.db import lock_schools
from shared.wire.messages import MappedRecord, QuarantinedRecord, Stage, quarantined

log = logging.getLogger("schoolmig.loader")
_P = SqlVersion.of("p")  # a parked record's version: (source_ts, client_id, seq)
_GONE = "p.school_id, p.domain, p.legacy_id, p.snapshot_id, p.record_index, p.source_ts, p.client_id"

# A parked record replaces an older parked version of itself (or its own parked self), never a
# newer one, nor another snapshot's at the same version (two devices holding one content: the
# one parked first stays, the other counts as loaded). (An upsert: deleting and re-inserting in
# one statement would collide, both parts seeing one snapshot.)
_PARK = f"""
INSERT INTO migration.parked_records AS p (school_id, domain, legacy_id, snapshot_id, record_index, source_ts, record,
                                           client_id, seq)
SELECT s, d, l, sn, i, ts, r::jsonb, c, q
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], $8::text[],
              $9::bigint[]) AS k (s, d, l, sn, i, ts, r, c, q)
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET snapshot_id = EXCLUDED.snapshot_id, record_index = EXCLUDED.record_index, source_ts = EXCLUDED.source_ts,
       record = EXCLUDED.record, client_id = EXCLUDED.client_id, seq = EXCLUDED.seq, parked_at = now()
 WHERE {_P.older(SqlVersion.of("EXCLUDED"))} OR p.snapshot_id = EXCLUDED.snapshot_id
RETURNING school_id, domain, legacy_id
"""
# A write judged stale is not waiting anywhere either: its parked self (or an older one) goes.
_FORGET_STALE = f"""
DELETE FROM migration.parked_records p USING {VERSIONED} AS k (s, d, l, ts, c, q)
 WHERE (p.school_id, p.domain, p.legacy_id) = (k.s, k.d, k.l) AND {_P.not_newer(KEYED)}
RETURNING {_GONE}
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
#: What a parked write is quarantined for while it still waits (the sweep's reasons): the
#: entry goes when the write lands, or no longer waits.
_HELD_REASONS = "('orphaned_reference', 'unique_conflict')"
# Parked writes that wait only for unique values to be let go (none for a parent).
_WAITING_FOR_VALUES = f"""
SELECT p.record::text AS record
  FROM migration.parked_records p
  JOIN unnest($1::text[], $2::text[], $3::text[]) AS k (school_id, domain, legacy_id)
    ON (p.school_id, p.domain, p.legacy_id) = (k.school_id, k.domain, k.legacy_id)
 WHERE EXISTS (SELECT 1 FROM migration.parked_refs r
                WHERE (r.school_id, r.domain, r.legacy_id) = (p.school_id, p.domain, p.legacy_id)
                  AND starts_with(r.ref_table, {sql_text(WAIT_PREFIX)}))
   AND NOT EXISTS (SELECT 1 FROM migration.parked_refs r
                    WHERE (r.school_id, r.domain, r.legacy_id) = (p.school_id, p.domain, p.legacy_id)
                      AND NOT starts_with(r.ref_table, {sql_text(WAIT_PREFIX)}))
"""
# Written records are no longer parked, nor quarantined for what they waited for.
_UNPARK = f"""
WITH k AS (SELECT * FROM {VERSIONED} AS k (s, d, l, ts, c, q)),
unparked AS (
  DELETE FROM migration.parked_records p USING k
   WHERE (p.school_id, p.domain, p.legacy_id) = (k.s, k.d, k.l) AND {_P.not_newer(KEYED)}
  RETURNING {_GONE}),
orphans AS (
  DELETE FROM migration.quarantine q USING unparked u
   WHERE (q.school_id, q.snapshot_id, q.domain, q.legacy_id) = (u.school_id, u.snapshot_id, u.domain, u.legacy_id)
     AND q.reason IN {_HELD_REASONS})
SELECT * FROM unparked
"""
# Writes that wait no more (displaced by a newer one of their record, judged stale, refused)
# are no conflict of the data either: their orphan or unique-conflict entries go.
_WITHDRAW = f"""
DELETE FROM migration.quarantine q
 USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS w (school_id, snapshot_id, domain, legacy_id)
 WHERE (q.school_id, q.snapshot_id, q.domain, q.legacy_id) = (w.school_id, w.snapshot_id, w.domain, w.legacy_id)
   AND q.reason IN {_HELD_REASONS}
"""
# What a newer parked write displaces: an older parked snapshot record of the same record.
_DISPLACED = f"""
SELECT {_GONE}
  FROM migration.parked_records p JOIN {VERSIONED} AS k (s, d, l, ts, c, q) ON (p.school_id, p.domain, p.legacy_id) = (k.s, k.d, k.l)
 WHERE {_P.older(KEYED)}
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


async def park(conn: asyncpg.Connection, parked: Sequence[tuple[MappedRecord, set[Ref]]]) -> None:
    """Park each record with the references it still waits for (exactly those)."""
    if not parked:
        return
    displaced = await conn.fetch(_DISPLACED, *version_columns([r for r, _ in parked])[:6])
    await _withdraw(conn, displaced)
    await mark_loaded_rows(conn, displaced)
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
    # A snapshot's record a newer parked write (a change, another device's) stands in front of:
    # superseded, counted.
    await mark_loaded(conn, [r for r, _ in parked if r.change is None and record_key(r) not in now_parked])
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


async def forget_stale(conn: asyncpg.Connection, stale: Sequence[MappedRecord]) -> None:
    """Writes that lost to a newer version: nothing waits for them (their parked selves, or
    older ones, go), and a snapshot's record still counts as loaded for its snapshot."""
    if stale:
        await mark_loaded(conn, [r for r in stale if r.change is None])
        forgotten = await conn.fetch(_FORGET_STALE, *version_columns(stale)[:6])
        await _withdraw(conn, forgotten)
        await mark_loaded_rows(conn, forgotten)


async def _withdraw(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    if rows:
        await conn.execute(
            _WITHDRAW,
            [r["school_id"] for r in rows],
            [r["snapshot_id"] for r in rows],
            [r["domain"] for r in rows],
            [r["legacy_id"] for r in rows],
        )


async def unpark_written(conn: asyncpg.Connection, written: Sequence[MappedRecord]) -> None:
    """Written records wait no more (their parked selves, or older ones, go) and are no
    orphans either."""
    if written:
        await mark_loaded_rows(conn, await conn.fetch(_UNPARK, *version_columns(written)[:6]))


async def released_by(conn: asyncpg.Connection, written: Sequence[Ref]) -> list[MappedRecord]:
    """Parked records whose last missing parent is among the rows just written."""
    if not written:
        return []
    satisfied = await conn.fetch(_SATISFIED, [t for t, _ in written], [r for _, r in written])
    keys = {(k["school_id"], k["domain"], k["legacy_id"]) for k in satisfied}
    if not keys:
        return []
    rows = await conn.fetch(_READY_TO_GO, *map(list, zip(*keys, strict=True)))
    return [MappedRecord.model_validate_json(r["record"]) for r in rows]


async def waiting_for_values(conn: asyncpg.Connection, keys: Iterable[RecordKey]) -> list[MappedRecord]:
    """The parked writes of these records that wait only for unique values to be let go."""
    if not (wanted := sorted(set(keys))):
        return []
    rows = await conn.fetch(_WAITING_FOR_VALUES, *map(list, zip(*wanted, strict=True)))
    return [MappedRecord.model_validate_json(r["record"]) for r in rows]


async def forget(conn: asyncpg.Connection, refused: Sequence[QuarantinedRecord]) -> None:
    """Records quarantined (refused by the database) wait no more."""
    if refused:
        await conn.execute(
            _FORGET_PARKED,
            [r.school_id for r in refused],
            [r.domain.value for r in refused],
            [r.legacy_id for r in refused],
            [r.snapshot_id for r in refused],
        )


@dataclass
class ParkedSweep:
    """What :func:`sweep` did with a snapshot's parked records."""

    orphans: int = 0
    """Quarantined: a parent is missing."""
    redrive: list[MappedRecord] = field(default_factory=list)
    """Waiting for nothing: to be written again."""
    pending: int = 0
    """Waiting for nothing, re-driven a moment ago: not written yet."""


_SATISFIED_NOW = f"DELETE FROM migration.parked_refs r WHERE r.school_id = $1 AND {ref_exists_sql('r.ref_table', 'r.ref_id')}"
# A parked change a newer write or deletion of its record superseded waits for nothing.
_SUPERSEDED_CHANGES = f"""
DELETE FROM migration.parked_records p USING migration.record_versions v
 WHERE p.school_id = $1 AND (v.school_id, v.domain, v.legacy_id) = (p.school_id, p.domain, p.legacy_id)
   AND p.client_id <> {sql_text(SNAPSHOT_CLIENT)}
   AND ((v.live_ts IS NOT NULL AND {_P.not_newer(SqlVersion.of("v", "live_ts", "live_client", "live_seq"))})
        OR (v.deleted_ts IS NOT NULL AND {_P.not_newer(SqlVersion.of("v", "deleted_ts", "deleted_client", "deleted_seq"))}))
RETURNING {_GONE}
"""
_SWEPT = f"""
SELECT p.domain, p.legacy_id, p.record::text AS record,
       p.parked_at < now() - make_interval(secs => $3) AS redrivable,
       array_remove(array_agg(r.ref_table ORDER BY r.ref_table), NULL) AS waiting_for
  FROM migration.parked_records p
  LEFT JOIN migration.parked_refs r USING (school_id, domain, legacy_id)
 WHERE p.school_id = $1 AND (p.snapshot_id = $2 OR {sql_is_change("p.snapshot_id")})
 GROUP BY p.domain, p.legacy_id, p.record::text, p.parked_at
"""
_REDRIVEN = (
    "UPDATE migration.parked_records SET parked_at = now()"
    " WHERE school_id = $1 AND (domain, legacy_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))"
)


async def sweep(pool: asyncpg.Pool, school_id: str, snapshot_id: str, redrive_after_s: float) -> ParkedSweep:
    """Settle the records of a complete snapshot still parked, and the school's parked
    changes: one transaction, under the school's write lock.

    A reference whose parent row exists now is satisfied (a lost un-parking, say after a
    race, is mended here); a record left waiting for nothing is handed back to be written
    again (*re-driven*, at most once per ``redrive_after_s``); a record still missing a
    parent is quarantined as ``orphaned_reference``: it will not come. Orphans stay parked
    too: should the parent arrive later (a change), the loader writes them and withdraws
    this quarantine entry in the same transaction.
    """
    async with pool.acquire() as conn, conn.transaction():
        await lock_schools(conn, [school_id])
        return await _sweep(conn, school_id, snapshot_id, redrive_after_s)


async def _sweep(conn: asyncpg.Connection, school_id: str, snapshot_id: str, redrive_after_s: float) -> ParkedSweep:
    await conn.execute(_SATISFIED_NOW, school_id)
    await _withdraw(conn, await conn.fetch(_SUPERSEDED_CHANGES, school_id))
    result = ParkedSweep()
    orphans = []
    swept = [
        (MappedRecord.model_validate_json(row["record"]), row)
        for row in await conn.fetch(_SWEPT, school_id, snapshot_id, redrive_after_s)
    ]
    # Writes waiting only for unique values: quarantined if a holder still holds one, else free.
    for_values = [r for r, row in swept if row["waiting_for"] and all(map(is_wait, row["waiting_for"]))]
    standing = await _standing_holders(conn, for_values)
    for record, row in swept:
        parents = [t for t in row["waiting_for"] if not is_wait(t)]
        if parents:
            reason, message = "orphaned_reference", f"its parent row in {', '.join(sorted(set(parents)))} never arrived"
        elif holders := standing.get(record_key(record)):
            reason = "unique_conflict"
            message = "a unique value it takes is still held when the sync is proven, by " + ", ".join(
                f"{h.key[1]}/{h.key[2]} ({h.table} {', '.join(h.claim[1])})" for h in holders
            )
        elif row["redrivable"]:  # waiting for nothing, or for values let go since
            result.redrive.append(record)
            continue
        else:
            result.pending += 1
            continue
        payload = reverse_record(record.domain, [(r.table, r.values) for r in record.rows])
        orphans.append(quarantined(record, stage=Stage.LOADER, reason=reason, message=message, payload=payload))
    await insert_quarantine(conn, orphans)
    if free := {record_key(r) for r in for_values if not standing.get(record_key(r))}:
        await conn.execute(_RESET_REFS, *map(list, zip(*free, strict=True)))
    if result.redrive:
        await conn.execute(_REDRIVEN, school_id, [r.domain.value for r in result.redrive], [r.legacy_id for r in result.redrive])
    result.orphans = len(orphans)
    return result


async def _standing_holders(conn: asyncpg.Connection, waiting: Sequence[MappedRecord]) -> dict[RecordKey, list[Held]]:
    """Per write waiting only for unique values: the live rows of other records holding them now."""
    if not waiting:
        return {}
    wanted = {record_key(r): uniques.claims(r) for r in waiting}
    held = await liveness.holders(conn, {c for mine in wanted.values() for c in mine})
    return {key: [h for h in held if h.claim in mine and h.key != key] for key, mine in wanted.items()}
