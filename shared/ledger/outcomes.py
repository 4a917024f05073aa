"""What became of each change a client sent: one answer per ``(client_id, seq)``.

:func:`standing` is the rule (pure); :func:`change_outcomes` reads its inputs from the
ledger. The answer is where the change stands *now*, the same whatever order the writes
arrived in (it follows from the versions, ``shared.ledger.versions``):

- ``quarantined``: it cannot be migrated; ``reason`` and ``message`` say why;
- ``waiting``: held for a parent row that has not arrived, or for a unique value another
  record still holds (``waiting_for``); it is written when that comes, or quarantined at the
  school's sync proof;
- ``applied``: its write is the record's state (a delete: the record is deleted by it);
- ``superseded``: a newer write of the record stands (``by``: a change ``chg.<client>.<seq>``
  or a snapshot id): on arrival, or later;
- ``deleted``: a create or update whose record a newer deletion removed (``by``);
- ``pending``: received, not yet through the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg

from shared.ledger.versions import SNAPSHOT_CLIENT, SNAPSHOT_SEQ, Version
from shared.messages import ChangeOp, change_id

Outcome = Literal["pending", "applied", "waiting", "superseded", "deleted", "quarantined"]
#: Outcomes that can still move without a new write of the record (the coordinator publishes
#: them again when they do): pending and waiting end; a quarantined change can be tried again.
OPEN: tuple[Outcome, ...] = ("pending", "waiting", "quarantined")


@dataclass(frozen=True)
class Write:
    version: Version
    by: str


@dataclass(frozen=True)
class Standing:
    outcome: Outcome
    by: str | None = None
    waiting_for: list[str] = field(default_factory=list)
    reason: str | None = None
    message: str | None = None


def standing(
    op: ChangeOp,
    version: Version,
    *,
    content: Write | None,
    deletion: Write | None,
    snapshot: Write | None,
    waiting_for: list[str],
    quarantine: tuple[str, str] | None,
) -> Standing:
    """Where a change of version ``version`` stands, given its record's greatest content write
    by a change (``content``), greatest deletion (``deletion``) and greatest snapshot write
    (``snapshot``), what it is parked for, and its quarantine entry (reason, message)."""
    if quarantine is not None:
        return Standing("quarantined", reason=quarantine[0], message=quarantine[1])
    if waiting_for:
        return Standing("waiting", waiting_for=waiting_for)
    writes = [w for w in (content, snapshot) if w is not None]
    newest_content = max(writes, key=lambda w: w.version, default=None)
    greatest = max([w for w in (newest_content, deletion) if w is not None], key=lambda w: w.version, default=None)
    if greatest is None or greatest.version < version:
        return Standing("pending")
    if op is ChangeOp.DELETE:
        if deletion is not None and deletion.version == version and greatest is deletion:
            return Standing("applied")
        return Standing("superseded", by=greatest.by)
    if newest_content is not None and newest_content.version == version and greatest is newest_content:
        return Standing("applied")
    if greatest is deletion:
        return Standing("deleted", by=deletion.by)
    return Standing("superseded", by=greatest.by)


@dataclass(frozen=True)
class ChangeStanding:
    school_id: str
    client_id: str
    seq: int
    domain: str
    record_id: str
    op: ChangeOp
    source_ts: datetime
    received_at: datetime
    standing: Standing

    @property
    def change_id(self) -> str:
        return change_id(self.client_id, self.seq)

    def as_json(self) -> dict[str, Any]:
        s = self.standing
        return {
            "school_id": self.school_id,
            "client_id": self.client_id,
            "seq": self.seq,
            "change_id": self.change_id,
            "domain": self.domain,
            "record_id": self.record_id,
            "op": self.op.value,
            "source_ts": self.source_ts.isoformat(),
            "outcome": s.outcome,
            **({"by": s.by} if s.by else {}),
            **({"waiting_for": s.waiting_for} if s.waiting_for else {}),
            **({"reason": s.reason, "message": s.message} if s.reason else {}),
        }


_CHANGES = """
SELECT c.school_id, c.client_id, c.seq, c.domain, c.record_id, c.op, c.source_ts, c.received_at,
       v.live_ts, v.live_client, v.live_seq, v.live_by,
       v.deleted_ts, v.deleted_client, v.deleted_seq, v.deleted_by,
       snap.source_ts AS snap_ts, snap.snapshot_id AS snap_by,
       (SELECT array_agg(CASE WHEN r.ref_table LIKE 'unique:%%' THEN 'a unique value of ' || substr(r.ref_table, 8)
                              ELSE 'its parent in ' || r.ref_table END || ' (row ' || r.ref_id || ')'
                         ORDER BY r.ref_table, r.ref_id)
          FROM migration.parked_records p
          JOIN migration.parked_refs r USING (school_id, domain, legacy_id)
         WHERE p.school_id = c.school_id AND p.domain = c.domain AND p.legacy_id = c.record_id
           AND p.snapshot_id = 'chg.' || c.client_id || '.' || c.seq) AS waiting_for,
       q.reason AS q_reason, q.message AS q_message
  FROM migration.changes c
  LEFT JOIN migration.record_versions v
    ON v.school_id = c.school_id AND v.domain = c.domain AND v.legacy_id = c.record_id
  LEFT JOIN LATERAL (
        SELECT l.source_ts, l.snapshot_id FROM migration.loaded_records l
         WHERE l.school_id = c.school_id AND l.domain = c.domain AND l.legacy_id = c.record_id
           AND l.snapshot_id NOT LIKE 'chg.%%'
         ORDER BY l.source_ts DESC LIMIT 1) snap ON true
  LEFT JOIN LATERAL (
        SELECT q.reason, q.message FROM migration.quarantine q
         WHERE q.school_id = c.school_id AND q.snapshot_id = 'chg.' || c.client_id || '.' || c.seq
           AND q.domain = c.domain
         LIMIT 1) q ON true
 WHERE c.school_id = $1 {where}
 ORDER BY c.client_id COLLATE "C", c.seq
 LIMIT {limit}
"""


def _write(ts: datetime | None, client: str | None, seq: int | None, by: str | None) -> Write | None:
    return None if ts is None else Write(Version(ts, client or SNAPSHOT_CLIENT, seq or SNAPSHOT_SEQ), by or "")


def _standing_of(row: asyncpg.Record) -> ChangeStanding:
    op = ChangeOp(row["op"])
    found = standing(
        op,
        Version(row["source_ts"], row["client_id"], row["seq"]),
        content=_write(row["live_ts"], row["live_client"], row["live_seq"], row["live_by"]),
        deletion=_write(row["deleted_ts"], row["deleted_client"], row["deleted_seq"], row["deleted_by"]),
        snapshot=_write(row["snap_ts"], SNAPSHOT_CLIENT, SNAPSHOT_SEQ, row["snap_by"]),
        waiting_for=list(row["waiting_for"] or ()),
        quarantine=(row["q_reason"], row["q_message"]) if row["q_reason"] is not None else None,
    )
    return ChangeStanding(
        row["school_id"],
        row["client_id"],
        row["seq"],
        row["domain"],
        row["record_id"],
        op,
        row["source_ts"],
        row["received_at"],
        found,
    )


async def change_outcomes(
    conn: asyncpg.Pool | asyncpg.Connection,
    school_id: str,
    *,
    client_id: str | None = None,
    seqs: list[int] | None = None,
    limit: int = 1000,
) -> list[ChangeStanding]:
    """Where each change of a school stands (of one client, and of given seqs, if asked)."""
    where, args = [], [school_id]
    if client_id is not None:
        args.append(client_id)
        where.append(f"AND c.client_id = ${len(args)}")
    if seqs is not None:
        args.append(seqs)  # type: ignore[arg-type]
        where.append(f"AND c.seq = ANY(${len(args)}::bigint[])")
    sql = _CHANGES.format(where=" ".join(where), limit=int(limit)).replace("%%", "%")
    return [_standing_of(r) for r in await conn.fetch(sql, *args)]


_UNSENT = """
SELECT c.school_id, c.client_id, c.seq, o.outcome FROM migration.changes c
  LEFT JOIN migration.change_outcomes o USING (school_id, client_id, seq)
 WHERE o.outcome IS NULL OR o.outcome = ANY($1::text[])
 ORDER BY o.outcome NULLS FIRST, c.received_at
 LIMIT $2
"""


async def unsettled(conn: asyncpg.Pool | asyncpg.Connection, limit: int) -> dict[tuple[str, str], dict[int, str | None]]:
    """Changes whose outcome was never announced or is open, per (school, client): each seq
    with the outcome announced last (never announced first)."""
    out: dict[tuple[str, str], dict[int, str | None]] = {}
    for r in await conn.fetch(_UNSENT, list(OPEN), limit):
        out.setdefault((r["school_id"], r["client_id"]), {})[r["seq"]] = r["outcome"]
    return out


async def announced(conn: asyncpg.Pool | asyncpg.Connection, found: list[ChangeStanding]) -> None:
    """Record the outcomes just published (so each is published again only when it moves)."""
    if found:
        await conn.execute(
            """
            INSERT INTO migration.change_outcomes (school_id, client_id, seq, outcome, announced_at)
            SELECT * , now() FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
            ON CONFLICT (school_id, client_id, seq) DO UPDATE SET outcome = EXCLUDED.outcome, announced_at = now()
            """,
            [f.school_id for f in found],
            [f.client_id for f in found],
            [f.seq for f in found],
            [f.standing.outcome for f in found],
        )
