"""The quarantine: records that did not migrate, each with its stage and reason.

The loader stores what any stage quarantined, the coordinator's sweep a complete snapshot's
orphans (``shared.ledger.parking``); the reports, the CLI and the validator read it here."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from shared.catalog.domains import Domain
from shared.catalog.tables import ref_exists_sql
from shared.failures.policy import with_retries
from shared.ledger.uniques import WAIT_PREFIX
from shared.ledger.versions import sql_is_change, sql_text
from shared.source.jsonsafe import printable
from shared.wire.messages import QuarantinedRecord

_QUARANTINE = """
INSERT INTO migration.quarantine
  (school_id, snapshot_id, domain, record_index, legacy_id, stage, reason, message, payload, payload_bytes)
SELECT s, sn, d, i, l, st, r, m, p::jsonb, b
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
              $10::bytea[])
       AS q (s, sn, d, i, l, st, r, m, p, b)
ON CONFLICT (school_id, snapshot_id, domain, record_index) DO NOTHING
"""


async def store_quarantine(pool: asyncpg.Pool, records: Sequence[QuarantinedRecord]) -> None:
    """Store quarantine entries (idempotent: one per school, snapshot, domain, record index)."""
    if records:
        await with_retries(lambda: insert_quarantine(pool, records), "store quarantine")


async def insert_quarantine(db: asyncpg.Pool | asyncpg.Connection, records: Sequence[QuarantinedRecord]) -> None:
    """The same on a pool or inside a caller's transaction, once (the caller retries)."""
    if not records:
        return
    # JSON text, cast in SQL: a list-shaped payload inside a jsonb[] parameter would be
    # read as one more array dimension. A payload jsonb cannot hold goes in as bytes.
    columns = [_payload_columns(r.payload) for r in records]
    await db.execute(
        _QUARANTINE,
        [r.school_id for r in records],
        [r.snapshot_id for r in records],
        [r.domain.value for r in records],
        [r.index for r in records],
        [_printable(r.legacy_id) for r in records],
        [r.stage.value for r in records],
        [printable(r.reason) for r in records],
        [printable(r.message) for r in records],
        [text for text, _ in columns],
        [raw for _, raw in columns],
    )


def _payload_columns(payload: object) -> tuple[str | None, bytes | None]:
    """(jsonb text, or None; the JSON as bytes when jsonb cannot hold it: NUL, NaN, a lone
    surrogate). Whatever the payload holds, one of the two keeps it; never an exception."""
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        if "\\u0000" not in text:
            text.encode("utf-8")  # a lone surrogate cannot be sent as text
            return text, None
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return None, json.dumps(payload, ensure_ascii=True, default=repr).encode()
    except (ValueError, TypeError, RecursionError):
        return None, b'"(the payload could not be kept as JSON; the verified backup holds it)"'


def _printable(text: str | None) -> str | None:
    return None if text is None else printable(text)


async def quarantine_entries(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> list[dict[str, object]]:
    rows = await pool.fetch(
        "SELECT domain, legacy_id, record_index, stage, reason FROM migration.quarantine"
        " WHERE school_id = $1 AND snapshot_id = $2 ORDER BY domain, record_index",
        school_id,
        snapshot_id,
    )
    return [dict(r) for r in rows]


async def quarantined_ids(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, dict[str, str]]:
    """Per domain, the records of this snapshot in quarantine, with their reason.

    A repeated id is left out: its first record is migrated, and only the repeat waits in
    quarantine under the same id."""
    found: dict[Domain, dict[str, str]] = {d: {} for d in Domain}
    rows = await pool.fetch(
        "SELECT domain, legacy_id, reason FROM migration.quarantine"
        " WHERE school_id = $1 AND snapshot_id = $2 AND legacy_id IS NOT NULL AND reason <> 'duplicate_id'",
        school_id,
        snapshot_id,
    )
    for r in rows:
        found[Domain(r["domain"])][r["legacy_id"]] = r["reason"]
    return found


async def quarantined_changes(pool: asyncpg.Pool, school_id: str) -> frozenset[str]:
    """The ids of the school's changes in quarantine (the tables never got them)."""
    rows = await pool.fetch(
        f"SELECT DISTINCT snapshot_id FROM migration.quarantine WHERE school_id = $1 AND {sql_is_change('snapshot_id')}",
        school_id,
    )
    return frozenset(r["snapshot_id"] for r in rows)


async def quarantine_reasons(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, Counter[str]]:
    rows = await pool.fetch(
        "SELECT domain, reason, count(*) AS n FROM migration.quarantine"
        " WHERE school_id = $1 AND snapshot_id = $2 GROUP BY domain, reason",
        school_id,
        snapshot_id,
    )
    found: dict[Domain, Counter[str]] = {}
    for r in rows:
        found.setdefault(Domain(r["domain"]), Counter())[r["reason"]] = int(r["n"])
    return found


async def orphans_with_parents(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, list[str]]:
    """Records quarantined as orphans although no parent they wait for is missing: an
    un-parking was lost (a race), not a parent. Never a warning: they are to be re-driven."""
    rows = await pool.fetch(
        f"""
        SELECT q.domain, q.legacy_id FROM migration.quarantine q
         WHERE q.school_id = $1 AND q.snapshot_id = $2 AND q.reason = 'orphaned_reference'
           AND EXISTS (SELECT 1 FROM migration.parked_records p
                        WHERE (p.school_id, p.domain, p.legacy_id) = (q.school_id, q.domain, q.legacy_id))
           AND NOT EXISTS (SELECT 1 FROM migration.parked_refs r
                            WHERE (r.school_id, r.domain, r.legacy_id) = (q.school_id, q.domain, q.legacy_id)
                              AND NOT starts_with(r.ref_table, {sql_text(WAIT_PREFIX)})
                              AND NOT {ref_exists_sql("r.ref_table", "r.ref_id")})
         ORDER BY q.domain, q.legacy_id
        """,
        school_id,
        snapshot_id,
    )
    found: dict[Domain, list[str]] = {}
    for r in rows:
        found.setdefault(Domain(r["domain"]), []).append(r["legacy_id"])
    return found


#: A quarantine entry (alias ``q``) that is a conflict of the data, not of the input: a write
#: whose unique value another record still held when the sync was proven, or a change whose
#: parent never came. It blocks the school's validation until the write lands after a fix
#: (the entry is withdrawn then) or an operator accepts it (``migration.accepted_conflicts``).
#: Input refused as such (unreadable, hostile, a snapshot's own orphans the audit reported)
#: is counted and reported, and blocks nothing.
DATA_CONFLICT_SQL = f"(q.reason = 'unique_conflict' OR (q.reason = 'orphaned_reference' AND {sql_is_change('q.snapshot_id')}))"

_DATA_CONFLICTS = f"""
SELECT q.domain, q.legacy_id, q.snapshot_id, q.reason, q.message, a.actor, a.reason AS accepted_reason
  FROM migration.quarantine q
  LEFT JOIN migration.accepted_conflicts a USING (school_id, snapshot_id, domain, record_index)
 WHERE q.school_id = $1 AND (q.snapshot_id = ANY($2::text[]) OR {sql_is_change("q.snapshot_id")}) AND {DATA_CONFLICT_SQL}
 ORDER BY q.domain, q.legacy_id COLLATE "C", q.snapshot_id COLLATE "C"
"""


async def data_conflicts(pool: asyncpg.Pool, school_id: str, snapshot_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The school's writes in quarantine for a conflict of the data (:data:`DATA_CONFLICT_SQL`),
    of these snapshots (each device's newest) and of its changes, each with who accepted it
    and why (or None)."""
    return [dict(r) for r in await pool.fetch(_DATA_CONFLICTS, school_id, sorted(set(snapshot_ids)))]


_ACCEPT = f"""
INSERT INTO migration.accepted_conflicts AS a (school_id, snapshot_id, domain, record_index, legacy_id, actor, reason)
SELECT q.school_id, q.snapshot_id, q.domain, q.record_index, q.legacy_id, $4, $5
  FROM migration.quarantine q JOIN unnest($2::text[], $3::text[]) AS k (domain, legacy_id) USING (domain, legacy_id)
 WHERE q.school_id = $1 AND {DATA_CONFLICT_SQL}
ON CONFLICT (school_id, snapshot_id, domain, record_index)
   DO UPDATE SET actor = EXCLUDED.actor, reason = EXCLUDED.reason, accepted_at = now()
RETURNING domain, legacy_id
"""


async def accept_conflicts(
    pool: asyncpg.Pool, school_id: str, records: Sequence[tuple[str, str]], actor: str, reason: str
) -> list[tuple[str, str]]:
    """An operator accepts the entries in quarantine for a conflict of the data of these
    (domain, legacy id) records, with a reason: they no longer block the school (a later,
    different conflict of the same record does). Returns the records accepted (one with no
    such entry is not)."""
    rows = await pool.fetch(_ACCEPT, school_id, [d for d, _ in records], [i for _, i in records], actor, reason)
    return sorted({(r["domain"], r["legacy_id"]) for r in rows})
