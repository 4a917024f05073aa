"""What each record holds: its ledger line (the snapshot it counts for) and its versions.

- ``migration.loaded_records``: one line per record a snapshot wrote (or whose write lost
  to a newer one: it still counts as loaded for its snapshot, or that snapshot's counts
  would never add up), with the snapshot's time; rewritten by a newer snapshot's record.
- ``migration.record_versions``: for records a change or a deletion touched, the greatest
  write of their content and their greatest deletion (``shared.ledger.versions``).

The writes are called inside the loader's transaction, under the school's write lock
(``shared.platform.db``); :func:`source_positions` is a read, for the export.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from shared.catalog.domains import Domain
from shared.ledger.keys import RecordKey
from shared.ledger.snapshots import later_sql, rank_sql
from shared.ledger.versions import SNAPSHOT_CLIENT, SqlVersion, Version, snapshot_version, version_of
from shared.wire.messages import MappedRecord


def version_columns(records: Sequence[MappedRecord]) -> tuple[list[Any], ...]:
    """(school, domain, legacy id, source_ts, client, seq, snapshot or change id) as arrays."""
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


#: The first six of :func:`version_columns` as a relation, to alias ``k (s, d, l, ts, c, q)``;
#: ``KEYED`` is the version it holds.
VERSIONED = "unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[])"
KEYED = SqlVersion.of("k", "ts", "c", "q")

# A line per device: each device's newest snapshot counts its own records (the device and the
# read time are the snapshot's, looked up by its id), whatever another device's snapshot wrote
# of them. Of one device, the newer snapshot (in the snapshot order) takes the line over, with
# its record's version, even an older one (content unchanged since another device's reading).
_LEDGER = f"""
INSERT INTO migration.loaded_records AS l
       (school_id, domain, legacy_id, snapshot_id, record_index, source_ts, device_id, read_at)
SELECT k.s, k.d, k.l, k.snap, k.i, k.ts, coalesce(sn.device_id, ''), coalesce(sn.taken_at, k.ts)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[]) AS k (s, d, l, snap, i, ts)
  LEFT JOIN migration.snapshots sn ON sn.school_id = k.s AND sn.snapshot_id = k.snap
ON CONFLICT (school_id, domain, legacy_id, device_id) DO UPDATE
   SET snapshot_id = EXCLUDED.snapshot_id, record_index = EXCLUDED.record_index,
       source_ts = EXCLUDED.source_ts, read_at = EXCLUDED.read_at, loaded_at = now()
 WHERE NOT {later_sql(rank_sql("l", "read_at"), rank_sql("EXCLUDED", "read_at"))}
"""
# The versions each record holds now: its content's and its deletion's, and its ledger
# line's snapshot time.
_CURRENT = """
SELECT k.s AS school_id, k.d AS domain, k.l AS legacy_id,
       v.live_ts, v.live_client, v.live_seq, v.deleted_ts, v.deleted_client, v.deleted_seq, l.l_ts
  FROM unnest($1::text[], $2::text[], $3::text[]) AS k (s, d, l)
  LEFT JOIN migration.record_versions v ON (v.school_id, v.domain, v.legacy_id) = (k.s, k.d, k.l)
  LEFT JOIN LATERAL (SELECT max(x.source_ts) AS l_ts FROM migration.loaded_records x
                      WHERE (x.school_id, x.domain, x.legacy_id) = (k.s, k.d, k.l)) l ON true
 WHERE v.school_id IS NOT NULL OR l.l_ts IS NOT NULL
"""
_HAS_VERSIONS = "SELECT EXISTS (SELECT 1 FROM migration.record_versions WHERE school_id = ANY($1::text[]))"
_LIVE_V = SqlVersion.of("v", "live_ts", "live_client", "live_seq")
_DELETED_V = SqlVersion.of("v", "deleted_ts", "deleted_client", "deleted_seq")
# A change's content version, over an older one (a new row for a record only snapshots wrote).
_LIVE = f"""
INSERT INTO migration.record_versions AS v (school_id, domain, legacy_id, live_ts, live_client, live_seq, live_by)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[], $7::text[])
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET live_ts = EXCLUDED.live_ts, live_client = EXCLUDED.live_client, live_seq = EXCLUDED.live_seq, live_by = EXCLUDED.live_by
 WHERE v.live_ts IS NULL OR {_LIVE_V.older(SqlVersion.of("EXCLUDED", "live_ts", "live_client", "live_seq"))}
"""
# A snapshot's record written where a change or deletion was: its version goes on that row
# (a record only snapshots wrote has its version in the ledger line, and no row here).
_SNAPSHOT = SqlVersion.snapshot("k.ts")
_LIVE_SNAPSHOT = f"""
UPDATE migration.record_versions v
   SET live_ts = k.ts, live_client = {_SNAPSHOT.client}, live_seq = {_SNAPSHOT.seq}, live_by = k.by
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS k (s, d, l, ts, by)
 WHERE (v.school_id, v.domain, v.legacy_id) = (k.s, k.d, k.l)
   AND (v.live_ts IS NULL OR {_LIVE_V.older(_SNAPSHOT)})
"""
# A deletion's version, over an older one (the conflict clause of every tombstone's insert).
TOMBSTONE_UPDATE = f"""
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET deleted_ts = EXCLUDED.deleted_ts, deleted_client = EXCLUDED.deleted_client, deleted_seq = EXCLUDED.deleted_seq,
       deleted_by = EXCLUDED.deleted_by, deleted_at = now()
 WHERE v.deleted_ts IS NULL
    OR {_DELETED_V.older(SqlVersion.of("EXCLUDED", "deleted_ts", "deleted_client", "deleted_seq"))}
"""
_TOMBSTONE = f"""
INSERT INTO migration.record_versions AS v
       (school_id, domain, legacy_id, deleted_ts, deleted_client, deleted_seq, deleted_by, deleted_at)
SELECT s, d, l, ts, c, q, by, now()
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[], $7::text[])
       AS k (s, d, l, ts, c, q, by)
{TOMBSTONE_UPDATE}
"""


async def has_versions(conn: asyncpg.Connection, school_ids: set[str]) -> bool:
    """Whether any of these schools has a record a change or a deletion touched (a school
    only ever bulk-loaded from snapshots has none)."""
    return bool(await conn.fetchval(_HAS_VERSIONS, sorted(school_ids)))


async def held_versions(
    conn: asyncpg.Connection, keys: Sequence[RecordKey]
) -> tuple[dict[RecordKey, Version], dict[RecordKey, Version]]:
    """(greatest content write, greatest deletion) each of these records holds now."""
    content: dict[RecordKey, Version] = {}
    deletion: dict[RecordKey, Version] = {}
    if not keys:
        return content, deletion
    for row in await conn.fetch(_CURRENT, *map(list, zip(*keys, strict=True))):
        key = (row["school_id"], row["domain"], row["legacy_id"])
        held = [Version(row["live_ts"], row["live_client"], row["live_seq"])] if row["live_ts"] is not None else []
        held += [snapshot_version(row["l_ts"])] if row["l_ts"] is not None else []
        if held:
            content[key] = max(held)
        if row["deleted_ts"] is not None:
            deletion[key] = Version(row["deleted_ts"], row["deleted_client"], row["deleted_seq"])
    return content, deletion


async def mark_loaded(conn: asyncpg.Connection, records: Sequence[MappedRecord]) -> None:
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


async def mark_loaded_rows(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    """Ledger lines for parked snapshot records a newer write took the place of (rows of
    ``migration.parked_records``): they count as loaded for their snapshot (superseded), or
    its counts would never add up. (A parked change just goes.)"""
    if rows := [r for r in rows if r["client_id"] == SNAPSHOT_CLIENT]:
        await conn.execute(
            _LEDGER,
            [r["school_id"] for r in rows],
            [r["domain"] for r in rows],
            [r["legacy_id"] for r in rows],
            [r["snapshot_id"] for r in rows],
            [r["record_index"] for r in rows],
            [r["source_ts"] for r in rows],
        )


async def write_tombstones(conn: asyncpg.Connection, deletes: Sequence[MappedRecord]) -> None:
    """Keep these deletes' tombstones, each over an older deletion of its record."""
    if deletes:
        await conn.execute(_TOMBSTONE, *version_columns(deletes))


async def mark_written(conn: asyncpg.Connection, records: Sequence[MappedRecord], *, versioned: bool) -> None:
    """After ``records``' rows are written: the snapshot records' ledger lines, the changes'
    content versions, and (``versioned``: their schools have versions at all) the snapshot
    records' versions where a change or deletion was."""
    snapshots = [r for r in records if r.change is None]
    await mark_loaded(conn, snapshots)
    if changes := [r for r in records if r.change is not None]:
        await conn.execute(_LIVE, *version_columns(changes))
    if versioned and snapshots:  # where a change or deletion was, the version moves on
        s_, d, l, ts, _, _, by = version_columns(snapshots)
        await conn.execute(_LIVE_SNAPSHOT, s_, d, l, ts, by)


_POSITIONS = """
SELECT k.legacy_id, l.record_index, coalesce(v.live_ts, l.source_ts) AS ts
  FROM unnest($3::text[]) AS k (legacy_id)
  LEFT JOIN LATERAL (SELECT x.record_index, x.source_ts FROM migration.loaded_records x
                      WHERE (x.school_id, x.domain, x.legacy_id) = ($1, $2, k.legacy_id)
                      ORDER BY x.source_ts DESC, x.device_id COLLATE "C" DESC LIMIT 1) l ON true
  LEFT JOIN migration.record_versions v ON (v.school_id, v.domain, v.legacy_id) = ($1, $2, k.legacy_id)
"""


async def source_positions(
    pool: asyncpg.Pool, school_id: str, domain: Domain, legacy_ids: list[str]
) -> dict[str, tuple[int | None, datetime | None]]:
    """Per record: its position in the snapshot its ledger line names (None: a change
    created it), and the time of its content's greatest write."""
    rows = await pool.fetch(_POSITIONS, school_id, domain.value, legacy_ids)
    return {r["legacy_id"]: (r["record_index"], r["ts"]) for r in rows}
