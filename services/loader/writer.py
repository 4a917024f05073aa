"""The loader's write path: one transaction per batch, parents before children.

Per table: COPY the batch into a temporary staging table, then one
``INSERT … SELECT … ON CONFLICT (id) DO UPDATE … WHERE target.source_ts <= new.source_ts``,
so redelivered or re-ordered writes never overwrite a newer row (last writer wins).
The ledger (``shared.ledger``: ledger lines, versions, tombstones, parking) is written in
the same transaction: a record counts as loaded exactly when its rows are committed.

A record whose parent row (in another record, on another topic) is not there yet is
parked (``shared.ledger.parking``; which records wait: ``parking.py`` here), in the same
transaction, and written by the transaction that brings its parent. Foreign-key errors never loop. Each
transaction holds its schools' write locks (``shared.platform.db.lock_schools``) before it looks at
parents or parked records, so with several loaders a child is never parked in a snapshot
that misses its parent's commit (which would leave it parked for good).

A step the database rejects for good is split in halves, each in a savepoint, until the
records it rejects are alone; those go to quarantine with the database's message, the
rest land in the same transaction. Transient
failures (connection lost, restart, deadlock) are retried after 1, 2 and 4 s (with
jitter), then raised so the consumer rewinds and the batch is delivered again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from services.loader.convert import ConversionCache, rows_by_table
from services.loader.parking import newest_per_record, plan, provides, references
from shared.catalog.tables import CHILD_TABLES, LOAD_ORDER, PRIMARY_TABLE, UNIQUE_KEYS, TableSpec
from shared.failures.policy import classify, with_retries
from shared.ledger import liveness, parking, uniques
from shared.ledger import records as ledger
from shared.ledger.accounting import unaccounted_in_newest
from shared.ledger.keys import RecordKey, Ref, record_key
from shared.ledger.quarantine import store_quarantine
from shared.ledger.versions import judge, sql_snapshot_rewrites
from shared.mapping import reverse_record
from shared.platform.db import lock_schools
from shared.wire.messages import MappedRecord, QuarantinedRecord, Stage, quarantined

log = logging.getLogger("schoolmig.loader")
Cache = ConversionCache  # converted rows per record, for one load


def _refused(exc: Exception) -> bool:
    """Whatever a batch fails with that is not the infrastructure's fault (``shared.failures.policy``)
    is some record's (the database or the client refusing a value, a conversion meeting one
    nobody foresaw): the batch is bisected until that record stands alone and is quarantined.
    The infrastructure's faults are raised, and retried."""
    return classify(exc) == "message"


_DEFAULTED = {"created_at", "updated_at"}  # NULL from a record without timestamps: now()


def _upsert_sql(spec: TableSpec) -> str:
    # Identifiers come from the fixed table catalogue, never from input; values go via COPY.
    # ``deleted_at`` is the staged row's: NULL (a write makes its rows live), or the deletion's
    # time for a record the step leaves deleted (``shared.ledger.liveness``).
    names = (*spec.column_names, "deleted_at")
    cols = ", ".join(names)
    selected = ", ".join(f"coalesce({c}, now())" if c in _DEFAULTED else c for c in names)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in ("id", "created_at"))
    return (
        f"INSERT INTO {spec.name} AS t ({cols}) SELECT {selected} FROM _stage_{spec.name} "
        f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE {sql_snapshot_rewrites('t.source_ts', 'EXCLUDED.source_ts')}"
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
# The staged rows of records the step leaves deleted are written not live.
_STAGE_BURIED = {
    spec.name: f"UPDATE _stage_{spec.name} s SET deleted_at = k.ts"
    " FROM unnest($1::uuid[], $2::timestamptz[]) AS k (id, ts) WHERE s.id = k.id"
    for spec in LOAD_ORDER
}
# Marks the transaction as the migration's (the updated_at and obligation-status triggers
# keep the source's values), and makes sure this connection has its staging tables.
_PREPARE = f"{liveness.AS_MIGRATION}; {_STAGING}"
_DOMAIN_OF_TABLE = {table: domain.value for domain, table in PRIMARY_TABLE.items()}
Awaited = tuple[str, str, str]  # (school, snapshot, parent domain) a child waits for


class Writer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.tally: Counter[str] = Counter()
        """The last load's writes judged by version (``shared.ledger.versions``): applied, deleted,
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
            in_flight = await unaccounted_in_newest(conn, keys)
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
        outvoted = _outvoted_snapshot_records(records, batch)
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
                        await _count_outvoted(conn, outvoted)
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
                    await _count_outvoted(conn, outvoted)
                    for step in steps:
                        await _write_isolated(conn, step, refused, cache, tally)
                    await parking.forget(conn, refused)  # a refused record is quarantined: it waits no more

        if batch:
            await with_retries(attempt, "load batch")
            await self.quarantine(refused)
        return refused

    async def quarantine(self, records: Sequence[QuarantinedRecord]) -> None:
        await store_quarantine(self.pool, records)


def _outvoted_snapshot_records(records: Sequence[MappedRecord], kept: Sequence[MappedRecord]) -> list[list[MappedRecord]]:
    """Snapshot records of the poll that another write of the same record in it outvoted (two
    devices' snapshots, two snapshots of one device): each still counts as loaded for its
    snapshot. Grouped per snapshot, each record once (one statement may touch a line once)."""
    chosen = {id(r) for r in kept}
    kept_from = {record_key(r): r.snapshot_id for r in kept if r.change is None}
    groups: dict[str, dict[RecordKey, MappedRecord]] = {}
    for r in records:
        # (a copy of the kept record itself, redelivered in the same poll, is that record: it
        # is written, parked or judged with it, and counted once, there)
        if r.change is None and id(r) not in chosen and kept_from.get(record_key(r)) != r.snapshot_id:
            groups.setdefault(r.snapshot_id, {})[record_key(r)] = r
    return [list(group.values()) for group in groups.values()]


async def _count_outvoted(conn: asyncpg.Connection, groups: Sequence[Sequence[MappedRecord]]) -> None:
    """Their ledger lines, before the poll's own writes (a device's newer line then stands)."""
    for group in groups:
        await ledger.mark_loaded(conn, group)


Buried = dict[RecordKey, datetime]  # records a step leaves deleted, with the deletion's time


async def _write_steps(conn: asyncpg.Connection, records: list[MappedRecord], cache: Cache, tally: Counter[str]) -> None:
    """Write ``records``, then whatever was waiting for them, and so on down (no savepoints)."""
    while records:
        freed = await _write_step(conn, records, cache, tally, direct=True)
        records = await parking.released_by(conn, _releases(freed))


async def _write_step(
    conn: asyncpg.Connection, records: list[MappedRecord], cache: Cache, tally: Counter[str], *, direct: bool = False
) -> list[Ref]:
    """One step, in this order: judge the writes, plan what waits (parents, unique values) and
    park it, take the rows of records the step deletes out of the live set (what they held is
    free for the step), write the rest. Returns the rows written or no longer live."""
    step = await _judge(conn, records, tally)
    ready, parked = await _plan(conn, step.keep, step.buried)
    await parking.park(conn, parked)
    freed = await liveness.bury(conn, step.buried.items())
    return freed + await _write_rows(conn, ready, cache, step, direct=direct)


class Step(NamedTuple):
    """What :func:`_judge` found for a step's records."""

    keep: list[MappedRecord]
    versioned: bool = False
    """Their schools have versions at all (a change or a deletion touched some record)."""
    buried: Buried = {}
    """The records the step leaves deleted, with the deletion's time."""
    new: frozenset[RecordKey] = frozenset()
    """Records that hold nothing yet (no content, no deletion): no child of theirs to drop."""


async def _judge(conn: asyncpg.Connection, records: list[MappedRecord], tally: Counter[str]) -> Step:
    """The records whose content to write: those whose version is greater than the content
    each record holds now (``shared.ledger.versions.judge``). A delete is applied here: its
    tombstone is kept if it is the greatest deletion, and the rows stay, not live (a soft
    delete, whichever came first, so that what references them is written the same in any
    order). A snapshot's record that lost still counts as loaded for its snapshot (its ledger
    line); a change that lost is dropped. Returns the :class:`Step` (a school only ever
    bulk-loaded from snapshots has no versions, and pays one query for this, unless a record
    has children: those are always judged)."""
    if not records:
        return Step(records)
    # A record with nested children is judged even in a school only snapshots wrote: a row
    # guard cannot keep an older write's child out that a newer one no longer has.
    changes = any(r.change is not None for r in records)
    if not changes and not any(r.domain in CHILD_TABLES for r in records):
        if not await ledger.has_versions(conn, {r.school_id for r in records}):
            return Step(records)
    keys = [record_key(r) for r in records]
    content, deletion = await ledger.held_versions(conn, keys)
    if not changes and not content and not deletion:  # a first load: every write is new, and wins
        return Step(records, new=frozenset(keys))
    judged = judge(records, keys, content, deletion)
    tally.update(judged.tally)
    await parking.forget_stale(conn, [*judged.stale, *judged.tombstones])  # a parked write a deletion outdates too
    await ledger.write_tombstones(conn, judged.tombstones)
    return Step(judged.keep, True, judged.buried, frozenset(keys) - content.keys() - deletion.keys())


async def _plan(
    conn: asyncpg.Connection, records: list[MappedRecord], buried: Buried
) -> tuple[list[MappedRecord], list[tuple[MappedRecord, set[Ref]]]]:
    """(ready, parked with what each waits for): records whose parent row is missing wait for
    it (``parking.py``); records claiming a unique value a live row of another record holds
    wait for that row (``shared.ledger.uniques``), with the holder's own waiting write drawn
    into the step (a swap, a cycle). Until nothing more waits: a record that waits keeps its
    current rows, which may hold what another claims, or be a parent another needs."""
    pool = list(records)
    existing = await _existing(conn, pool)
    waiting: dict[RecordKey, tuple[MappedRecord, set[Ref]]] = {}
    drawn: set[RecordKey] = set()
    while True:
        result = plan([r for r in pool if record_key(r) not in waiting], existing)
        live = [r for r in result.ready if record_key(r) not in buried]
        held = await liveness.holders(conn, {claim for r in live for claim in uniques.claims(r)})
        settled = uniques.settle(live, held, gone=buried.keys())
        holder_of = {uniques.wait_ref(h.table, h.row_id): h.key for h in held}
        known = {record_key(r) for r in pool}
        if owed := {k for _, refs in settled.waiting for ref in refs if (k := holder_of.get(ref)) is not None} - drawn - known:
            drawn |= owed
            if extra := await parking.waiting_for_values(conn, owed):
                pool += extra  # a holder that waits to let go: judged with the step
                existing |= await _existing(conn, extra)
                continue
        if not settled.waiting:
            return result.ready, [*result.parked, *waiting.values()]
        waiting.update((record_key(r), (r, refs)) for r, refs in settled.waiting)


def _releases(refs: Sequence[Ref]) -> list[Ref]:
    """What rows just written, or no longer live, release: children waiting for them as a
    parent, and writes waiting for a unique value they held."""
    return [*refs, *(uniques.wait_ref(table, row) for table, row in refs if table in UNIQUE_KEYS)]


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
            freed = await _write_step(conn, records, cache, judged)
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
    await _write_isolated(conn, await parking.released_by(conn, _releases(freed)), refused, cache, tally)


async def _write_rows(
    conn: asyncpg.Connection,
    records: list[MappedRecord],
    cache: Cache,
    step: Step,
    *,
    direct: bool = False,
) -> list[Ref]:
    """COPY each table's rows into staging and upsert them, parents first; the rows of
    records the step leaves deleted (``buried``) are written not live, and child rows a
    newer write no longer has stop being live. Returns the rows written or no longer live.

    With ``direct``, a table none of whose rows exist yet (the common case of a first bulk
    load) takes PostgreSQL's fastest path instead: COPY straight into the table, which is
    what the upsert would have done row by row. Were another writer to insert one of those
    ids meanwhile, the COPY fails on the primary key, and the caller writes the batch again
    with upserts.
    """
    if not records:
        return []
    tables = rows_by_table(records, cache)
    under = {str(row.values["id"]): at for r in records if (at := step.buried.get(record_key(r))) is not None for row in r.rows}
    present = [spec for spec in LOAD_ORDER if tables.get(spec.name)]
    fresh = await _fresh_tables(conn, present, tables) if direct and not under else set()
    # Before the upserts: a value a dropped child held is free for a row written with them.
    # (Always: a record's new children can all be new ids, its old ones still live.)
    dropped = await liveness.drop_children(conn, [r for r in records if record_key(r) not in step.new])
    for spec in present:
        rows = tables[spec.name]
        if spec.name in fresh:
            await conn.copy_records_to_table(spec.name, records=rows, columns=spec.column_names)
        else:
            await conn.copy_records_to_table(f"_stage_{spec.name}", records=rows, columns=spec.column_names)
            if mine := [(str(row[0]), under[str(row[0])]) for row in rows if str(row[0]) in under]:
                await conn.execute(_STAGE_BURIED[spec.name], [i for i, _ in mine], [at for _, at in mine])
            await conn.execute(_UPSERTS[spec.name])
    await ledger.mark_written(conn, records, versioned=step.versioned)
    await parking.unpark_written(conn, records)
    return [*(ref for r in records for ref in provides(r)), *dropped]


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
