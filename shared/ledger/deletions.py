"""Which records are deleted: the tombstones a newer snapshot writes, and what reads them.

A record is deleted while its greatest deletion is greater than its greatest content write
(``shared.ledger.versions.is_deleted``); the view ``migration.deleted_records`` lists them.
Rows stay in the tables, not live (a soft delete: ``shared.ledger.liveness``). The coordinator marks what a complete snapshot's
device no longer holds (:func:`mark_deleted`); the loader writes the changes' tombstones
(``shared.ledger.records``).
"""

from __future__ import annotations

import asyncpg

from shared.catalog.domains import Domain
from shared.ledger import liveness
from shared.ledger.device_store import device_states, unmarked_deletions
from shared.ledger.devices import conflicts
from shared.ledger.records import TOMBSTONE_UPDATE
from shared.ledger.versions import SqlVersion
from shared.platform.db import lock_schools

_SNAPSHOT = SqlVersion.snapshot("snap.taken_at")

# The deletions a snapshot's derivation found (records its device held and no longer holds),
# each a tombstone at the snapshot's version over an older deletion of the record.
_MARK_DELETED = f"""
WITH snap AS (SELECT taken_at FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2),
marked AS (
  INSERT INTO migration.record_versions AS v
         (school_id, domain, legacy_id, deleted_ts, deleted_client, deleted_seq, deleted_by, deleted_at)
  SELECT $1, g.domain, g.legacy_id, snap.taken_at, {_SNAPSHOT.client}, {_SNAPSHOT.seq}, $2, now()
    FROM unnest($3::text[], $4::text[]) AS g (domain, legacy_id), snap
  {TOMBSTONE_UPDATE}
  RETURNING 1)
SELECT count(*) FROM marked
"""
# Of the records a snapshot's deletions name, those deleted now, with their deletion's time.
_NOW_DELETED = """
SELECT d.domain, d.legacy_id, v.deleted_ts
  FROM migration.deleted_records d
  JOIN migration.record_versions v USING (school_id, domain, legacy_id)
  JOIN unnest($2::text[], $3::text[]) AS g (domain, legacy_id) USING (domain, legacy_id)
 WHERE d.school_id = $1
"""
_MARKED = "UPDATE migration.snapshots SET deletions_marked_at = now() WHERE school_id = $1 AND snapshot_id = $2"


async def mark_deleted(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> int:
    """Once ``snapshot_id`` is fully accounted for: the deletions of every derived snapshot of
    the school not marked yet, this one's and those of snapshots replaced while they synced
    (each record its device held in its previous snapshot and no longer holds:
    ``shared.ledger.devices``), as tombstones at their snapshot's version, which a later write
    of the record revives and an older one does not (so when they are written does not
    matter). A record a device never held says nothing. Rows stay, with their history, not
    live. One
    transaction, under the school's write lock. Returns how many tombstones were written now."""
    marked = 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(liveness.AS_MIGRATION)
        await lock_schools(conn, [school_id])
        pending = dict(await unmarked_deletions(conn, school_id))
        pending.setdefault(snapshot_id, [])  # a snapshot never derived (older than device histories) is marked too
        for snapshot, gone in sorted(pending.items()):
            marked += await conn.fetchval(_MARK_DELETED, school_id, snapshot, [d for d, _ in gone], [i for _, i in gone])
            deleted = await conn.fetch(_NOW_DELETED, school_id, [d for d, _ in gone], [i for _, i in gone])
            await liveness.bury(conn, [((school_id, r["domain"], r["legacy_id"]), r["deleted_ts"]) for r in deleted])
            await conn.execute(_MARKED, school_id, snapshot)
    return int(marked)


def live_sql(alias: str) -> str:
    """The condition that row ``alias`` of a target table is live: its record not deleted, and
    the row one its record's newest write has (``shared.ledger.liveness``)."""
    return f"{alias}.deleted_at IS NULL"


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


async def device_conflicts(pool: asyncpg.Pool, school_id: str, limit: int = 200) -> list[dict[str, object]]:
    """The records the school's devices disagree on (different content, or held by one and
    deleted by another), each with every device's version and the winner
    (``shared.ledger.devices.conflicts``): for an operator to review."""
    return [c.as_json() for c in conflicts(await device_states(pool, school_id))[:limit]]
