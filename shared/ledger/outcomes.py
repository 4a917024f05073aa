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

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg

from shared.ledger.versions import SNAPSHOT_CLIENT, SNAPSHOT_SEQ, Version
from shared.wire.messages import ChangeOp, change_id

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
    held: Write | None = None,
) -> Standing:
    """Where a change of version ``version`` stands, given its record's greatest content write
    by a change (``content``), greatest deletion (``deletion``) and greatest snapshot write
    (``snapshot``), what it is parked for, its quarantine entry (reason, message), and the
    greatest write of its record held back (``held``: parked, or quarantined for a conflict
    or a missing parent), which displaced it from the parking if newer."""
    if quarantine is not None:
        return Standing("quarantined", reason=quarantine[0], message=quarantine[1])
    if waiting_for:
        return Standing("waiting", waiting_for=waiting_for)
    writes = [w for w in (content, snapshot) if w is not None]
    newest_content = max(writes, key=lambda w: w.version, default=None)
    greatest = max([w for w in (newest_content, deletion) if w is not None], key=lambda w: w.version, default=None)
    if greatest is None or greatest.version < version:
        if held is not None and held.version > version:  # displaced by a newer write of its record
            return Standing("superseded", by=held.by)
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
            **({"reason": s.reason, "message": public_message(s.message or "")} if s.reason else {}),
        }


_QUOTED_OR_LIST = re.compile(r"\[[^\]]*\]|'[^']*'")


def public_message(message: str) -> str:
    """A quarantine message as a client may read it (the outcomes topic, the HTTP API): the
    field it names and the rule, the value it quotes left out (it may be personal data: a
    birth date that is not a date). Allowed values in ``[...]`` stay."""
    seen_field = False

    def keep(match: re.Match[str]) -> str:
        nonlocal seen_field
        token = match.group(0)
        if token.startswith("[") or not seen_field:
            seen_field = seen_field or token.startswith("'")
            return token
        return "…"

    return _QUOTED_OR_LIST.sub(keep, message)


_CHANGES = """
SELECT c.school_id, c.client_id, c.seq, c.domain, c.record_id, c.op, c.source_ts, c.received_at,
       v.live_ts, v.live_client, v.live_seq, v.live_by,
       v.deleted_ts, v.deleted_client, v.deleted_seq, v.deleted_by,
       snap.source_ts AS snap_ts, snap.snapshot_id AS snap_by,
       (SELECT array_agg(CASE WHEN r.ref_table LIKE 'unique:%' THEN 'a unique value of ' || substr(r.ref_table, 8)
                              ELSE 'its parent in ' || r.ref_table END || ' (row ' || r.ref_id || ')'
                         ORDER BY r.ref_table, r.ref_id)
          FROM migration.parked_records p
          JOIN migration.parked_refs r USING (school_id, domain, legacy_id)
         WHERE p.school_id = c.school_id AND p.domain = c.domain AND p.legacy_id = c.record_id
           AND p.snapshot_id = 'chg.' || c.client_id || '.' || c.seq) AS waiting_for,
       q.reason AS q_reason, q.message AS q_message,
       held.source_ts AS held_ts, held.client_id AS held_client, held.seq AS held_seq, held.by AS held_by
  FROM migration.changes c
  LEFT JOIN migration.record_versions v
    ON v.school_id = c.school_id AND v.domain = c.domain AND v.legacy_id = c.record_id
  LEFT JOIN LATERAL (
        SELECT l.source_ts, l.snapshot_id FROM migration.loaded_records l
         WHERE l.school_id = c.school_id AND l.domain = c.domain AND l.legacy_id = c.record_id
           AND l.snapshot_id NOT LIKE 'chg.%'
         ORDER BY l.source_ts DESC LIMIT 1) snap ON true
  LEFT JOIN LATERAL (
        SELECT q.reason, q.message FROM migration.quarantine q
         WHERE q.school_id = c.school_id AND q.snapshot_id = 'chg.' || c.client_id || '.' || c.seq
           AND q.domain = c.domain
         LIMIT 1) q ON true
  LEFT JOIN LATERAL (
        SELECT o.source_ts, o.client_id, o.seq, x.by FROM (
               SELECT p.snapshot_id AS by FROM migration.parked_records p
                WHERE p.school_id = c.school_id AND p.domain = c.domain AND p.legacy_id = c.record_id
               UNION ALL
               SELECT hq.snapshot_id FROM migration.quarantine hq
                WHERE hq.school_id = c.school_id AND hq.domain = c.domain AND hq.legacy_id = c.record_id
                  AND hq.reason = ANY($2::text[])) x
          JOIN migration.changes o ON o.school_id = c.school_id AND 'chg.' || o.client_id || '.' || o.seq = x.by
         ORDER BY o.source_ts DESC, o.client_id COLLATE "C" DESC, o.seq DESC LIMIT 1) held ON true
 WHERE c.school_id = $1 {where}
 ORDER BY c.client_id COLLATE "C", c.seq
 LIMIT {limit}
"""
#: Quarantine reasons of a write held back by the parking (``shared.ledger.parking``).
_HELD_BACK = ["orphaned_reference", "unique_conflict"]


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
        held=_write(row["held_ts"], row["held_client"], row["held_seq"], row["held_by"]),
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
    where: list[str] = []
    args: list[object] = [school_id, _HELD_BACK]
    if client_id is not None:
        args.append(client_id)
        where.append(f"AND c.client_id = ${len(args)}")
    if seqs is not None:
        args.append(seqs)
        where.append(f"AND c.seq = ANY(${len(args)}::bigint[])")
    sql = _CHANGES.format(where=" ".join(where), limit=int(limit))
    return [_standing_of(r) for r in await conn.fetch(sql, *args)]


@dataclass(frozen=True)
class Due:
    """A change whose outcome is to be checked: ``last`` announced (None: never)."""

    school_id: str
    client_id: str
    seq: int
    last: str | None


_DUE = f"""
SELECT school_id, client_id, seq, CASE WHEN announced_at IS NULL THEN NULL ELSE outcome END AS last
  FROM migration.change_outcomes
 WHERE outcome IN ({", ".join(f"'{o}'" for o in OPEN)}) OR announced_at IS NULL OR recheck
 ORDER BY checked_at NULLS FIRST
 LIMIT $1
"""


async def due(conn: asyncpg.Pool | asyncpg.Connection, limit: int) -> list[Due]:
    """Changes never announced or whose announced outcome is open, the least recently checked
    first (a change is not skipped for ever behind others)."""
    return [Due(r["school_id"], r["client_id"], r["seq"], r["last"]) for r in await conn.fetch(_DUE, limit)]


async def checked(conn: asyncpg.Pool | asyncpg.Connection, found: list[ChangeStanding], announced: list[ChangeStanding]) -> None:
    """Record that ``found`` were checked now, and ``announced`` published with their outcome; a
    change announced as applied sends the earlier applied changes of its record to be checked
    again (they are superseded or deleted now: announced so)."""
    told = {(f.school_id, f.client_id, f.seq) for f in announced}
    if found:
        await conn.execute(
            """
            UPDATE migration.change_outcomes o
               SET checked_at = now(),
                   recheck = false,
                   outcome = CASE WHEN u.told THEN u.outcome ELSE o.outcome END,
                   announced_at = CASE WHEN u.told THEN now() ELSE o.announced_at END
              FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bool[]) AS u (school_id, client_id, seq, outcome, told)
             WHERE (o.school_id, o.client_id, o.seq) = (u.school_id, u.client_id, u.seq)
            """,
            [f.school_id for f in found],
            [f.client_id for f in found],
            [f.seq for f in found],
            [f.standing.outcome for f in found],
            [(f.school_id, f.client_id, f.seq) in told for f in found],
        )
    overtaking = [f for f in announced if f.standing.outcome == "applied"]
    if overtaking:  # the applied changes of those records before them stand elsewhere now
        await conn.execute(
            """
            UPDATE migration.change_outcomes o SET recheck = true
              FROM migration.changes c,
                   unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS n (school_id, domain, record_id, client_id, seq)
             WHERE c.school_id = n.school_id AND c.domain = n.domain AND c.record_id = n.record_id
               AND (c.client_id, c.seq) IS DISTINCT FROM (n.client_id, n.seq)
               AND o.school_id = c.school_id AND o.client_id = c.client_id AND o.seq = c.seq
               AND o.outcome = 'applied' AND NOT o.recheck
            """,
            [f.school_id for f in overtaking],
            [f.domain for f in overtaking],
            [f.record_id for f in overtaking],
            [f.client_id for f in overtaking],
            [f.seq for f in overtaking],
        )
