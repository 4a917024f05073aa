"""Which records are deleted: the tombstones a newer snapshot writes, and what reads them.

A record is deleted while its greatest deletion is greater than its greatest content write
(``shared.ledger.versions.is_deleted``); the view ``migration.deleted_records`` lists them.
Rows stay in the tables (a soft delete). The coordinator marks what a complete newest
snapshot no longer has (:func:`mark_deleted`); the loader writes the changes' tombstones
(``shared.ledger.records``).
"""

from __future__ import annotations

import asyncpg

from shared.db import lock_schools
from shared.domains import Domain
from shared.ledger.records import TOMBSTONE_UPDATE
from shared.ledger.versions import SqlVersion

_LIVE = SqlVersion.of("h", "live_ts", "live_client", "live_seq")
_DELETED = SqlVersion.of("h", "deleted_ts", "deleted_client", "deleted_seq")
_NEWEST = SqlVersion.snapshot("newest.taken_at")

# A record of the newest snapshot has its ledger line rewritten with that snapshot (last
# writer wins), so the lines still naming another snapshot are the ones it lacks.
_MARK_DELETED = f"""
WITH newest AS (SELECT taken_at FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2),
held AS (
  SELECT domain, legacy_id, l.snapshot_id AS l_snapshot, l.source_ts AS l_ts,
         v.live_ts, v.live_client, v.live_seq, v.deleted_ts, v.deleted_client, v.deleted_seq
    FROM (SELECT * FROM migration.loaded_records WHERE school_id = $1) l
    FULL JOIN (SELECT * FROM migration.record_versions WHERE school_id = $1) v USING (domain, legacy_id)),
gone AS (
  SELECT h.domain, h.legacy_id FROM held h, newest
   WHERE h.l_snapshot IS DISTINCT FROM $2
     AND (h.l_ts IS NULL OR {SqlVersion.snapshot("h.l_ts").not_newer(_NEWEST)})
     AND (h.live_ts IS NULL OR {_LIVE.older(_NEWEST)})
     AND (h.deleted_ts IS NULL OR {_DELETED.older(_NEWEST)})
     -- a record the newest has but quarantined or parks is not gone: it is accounted there
     AND NOT EXISTS (SELECT 1 FROM migration.quarantine q
                      WHERE q.school_id = $1 AND q.snapshot_id = $2 AND q.domain = h.domain
                        AND q.legacy_id = h.legacy_id)
     AND NOT EXISTS (SELECT 1 FROM migration.parked_records p
                      WHERE p.school_id = $1 AND p.snapshot_id = $2 AND p.domain = h.domain
                        AND p.legacy_id = h.legacy_id)),
marked AS (
  INSERT INTO migration.record_versions AS v
         (school_id, domain, legacy_id, deleted_ts, deleted_client, deleted_seq, deleted_by, deleted_at)
  SELECT $1, g.domain, g.legacy_id, newest.taken_at, {_NEWEST.client}, {_NEWEST.seq}, $2, now() FROM gone g, newest
  {TOMBSTONE_UPDATE}
  RETURNING 1)
SELECT count(*) FROM marked
"""
_MARKED = "UPDATE migration.snapshots SET deletions_marked_at = now() WHERE school_id = $1 AND snapshot_id = $2"


async def mark_deleted(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> int:
    """Once ``snapshot_id`` (the school's newest) is fully accounted for: every record of the
    school this snapshot no longer has, whose last write (a snapshot's or a change's) is older
    than it, is marked deleted by it: a tombstone at the snapshot's version. Its rows stay,
    with their history; a later write revives it, an older one arriving late does not (a
    record deleted before has its tombstone moved up to this snapshot's version, for the
    same reason). One transaction, under the school's write lock (no loader writes the school
    meanwhile). Returns how many tombstones were written now."""
    async with pool.acquire() as conn, conn.transaction():
        await lock_schools(conn, [school_id])
        marked = await conn.fetchval(_MARK_DELETED, school_id, snapshot_id)
        await conn.execute(_MARKED, school_id, snapshot_id)
    return int(marked)


def live_sql(alias: str, domain: str) -> str:
    """The condition that the record of row ``alias`` (a target table's, with school_id and
    legacy_id) in the domain given by the SQL expression ``domain`` is not deleted."""
    return (
        "NOT EXISTS (SELECT 1 FROM migration.deleted_records d"
        f" WHERE (d.school_id, d.domain, d.legacy_id) = ({alias}.school_id, {domain}, {alias}.legacy_id))"
    )


async def deleted_counts(pool: asyncpg.Pool, school_id: str) -> dict[str, int]:
    """Per domain, the school's records marked deleted."""
    rows = await pool.fetch(
        "SELECT domain, count(*) AS n FROM migration.deleted_records WHERE school_id = $1 GROUP BY domain", school_id
    )
    return {r["domain"]: int(r["n"]) for r in rows}


async def deleted_ids(pool: asyncpg.Pool, school_id: str) -> dict[Domain, set[str]]:
    """Per domain, the school's deleted records: their rows stay in the tables."""
    found: dict[Domain, set[str]] = {d: set() for d in Domain}
    for r in await pool.fetch("SELECT domain, legacy_id FROM migration.deleted_records WHERE school_id = $1", school_id):
        found[Domain(r["domain"])].add(r["legacy_id"])
    return found


# A deleted record whose last snapshot write came from another device than the snapshot that
# deleted it: the device that deleted it may never have held it (devices are not merged yet).
_FROM_OTHER_DEVICES = """
SELECT d.domain, d.legacy_id, held.device_id AS held_by, gone.device_id AS deleted_by, d.snapshot_id AS deleted_in
  FROM migration.deleted_records d
  JOIN migration.loaded_records l USING (school_id, domain, legacy_id)
  JOIN migration.snapshots held ON (held.school_id, held.snapshot_id) = (l.school_id, l.snapshot_id)
  JOIN migration.snapshots gone ON (gone.school_id, gone.snapshot_id) = (d.school_id, d.snapshot_id)
 WHERE d.school_id = $1 AND held.device_id <> gone.device_id
 ORDER BY d.domain, d.legacy_id LIMIT $2
"""


async def deleted_from_other_devices(pool: asyncpg.Pool, school_id: str, limit: int = 200) -> list[dict[str, str]]:
    """The school's deleted records that a snapshot of another device than the deleting one
    last held (domain, legacy_id, held_by, deleted_by, deleted_in; devices by id, '' the
    unnamed one). A school's snapshots are one history whatever device they come from (the
    newest is the school's truth), so one device's snapshot deletes what only another held:
    soft deletes, rows kept, listed here for an operator to review."""
    return [dict(r) for r in await pool.fetch(_FROM_OTHER_DEVICES, school_id, limit)]
