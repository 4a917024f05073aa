"""The migration at a glance, as stored: what ``schoolmig status`` and ``schoolmig report``
print and the coordinator's status page shows (the plan's monitoring dashboard).

Ids, counts, phases and reason codes only: never a record's values, never an operator's
free-text reason (it may name a person), never a dead letter's payload or message.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg

from shared.catalog.domains import ALL_DOMAINS, Domain
from shared.ledger.accounting import DomainCounts, progress, record_counts_many
from shared.ledger.device_store import device_snapshots, device_states
from shared.ledger.devices import conflicts
from shared.ledger.guidance import next_step
from shared.ledger.quarantine import data_conflicts
from shared.ledger.schools import REFUSED, audit_block, is_refusal, last_validation_ok, local_copies, schools

#: Quarantine reasons that mean the data itself conflicts (an operator decides), as opposed
#: to a record the mapping could not read; the rest are input errors.
_CONSISTENCY = ("unique_conflict", "orphaned_reference", "duplicate_id")


Counts = dict[tuple[str, str], dict[Domain, DomainCounts]]


async def school_rows(pool: asyncpg.Pool, *, devices: bool = True) -> list[dict[str, Any]]:
    """Every school (scratch schools aside): phase, mode, progress, why it waits and what
    moves it on; with ``devices``, the browsers its data came from and where they disagree."""
    rows, _ = await _rows_and_counts(pool, devices=devices)
    return rows


async def _rows_and_counts(pool: asyncpg.Pool, *, devices: bool) -> tuple[list[dict[str, Any]], Counts]:
    """:func:`school_rows`, with the counts of each school's current snapshot they were made from."""
    rows = await schools(pool)
    counts = await record_counts_many(pool, [(r["school_id"], r["snapshot_id"]) for r in rows if r["snapshot_id"]])
    for school in rows:
        sid, snapshot = school["school_id"], school["snapshot_id"]
        mine = counts.get((sid, snapshot)) if snapshot else None
        school["accounted"], school["source"] = progress(mine)
        school["loaded"] = sum(c.loaded for c in (mine or {}).values())
        school["quarantined"] = sum(c.quarantined for c in (mine or {}).values())
        if devices:
            states = await device_states(pool, sid)
            school["devices"] = sorted(states)  # the browsers its snapshots came from ('' the unnamed one)
            school["device_conflicts"] = len(conflicts(states))  # records they disagree on (the report lists them)
        school["data_conflicts"] = []
        if devices or school["phase"] == "synced":  # writes held for a conflict of the data: they block validation
            newest = await device_snapshots(pool, sid)
            held = await data_conflicts(pool, sid, [*newest, *filter(None, [snapshot])])
            school["data_conflicts"] = [
                {
                    "record": f"{c['domain']}/{c['legacy_id']}",
                    "reason": c["reason"],
                    "message": c["message"],
                    "accepted_by": c["actor"],
                }
                for c in held
            ]
        school["blocked"] = await audit_block(pool, sid, snapshot) if snapshot and school["phase"] == "registered" else None
        school["validation_ok"] = (
            await last_validation_ok(pool, sid, snapshot) if snapshot and school["phase"] == "synced" else None
        )
        if school["phase"] == "completed":  # the plan's last step: which devices still hold the school's data
            school["local_copies"] = await local_copies(pool, sid)
        step = next_step(school)
        school["waits_for"], school["next"] = step.waits_for, step.command
    return rows, counts


def _totals(rows: list[dict[str, Any]], counts: Counts) -> dict[str, Any]:
    by_domain = {d.value: {"total": 0, "migrated": 0, "failed": 0, "in_flight": 0} for d in ALL_DOMAINS}
    for school in rows:
        for domain, c in counts.get((school["school_id"], school["snapshot_id"]), {}).items():
            entry = by_domain[domain.value]
            entry["total"] += c.source
            entry["migrated"] += c.loaded
            entry["failed"] += c.quarantined
            entry["in_flight"] += max(c.source - c.loaded - c.quarantined, 0)
    accounted = sum(s["accounted"] for s in rows)  # what counts as accounted: shared.ledger.accounting.progress
    total = sum(d["total"] for d in by_domain.values())
    return {
        "overview": {
            "total_records": total,
            "migrated_records": sum(d["migrated"] for d in by_domain.values()),
            "failed_records": sum(d["failed"] for d in by_domain.values()),
            "migration_progress": round(100.0 * accounted / total, 1) if total else 0.0,
        },
        "by_domain": by_domain,
    }


async def overview(pool: asyncpg.Pool, since: datetime | None = None, recent: int = 20) -> dict[str, Any]:
    """The dashboard's figures: overview, per domain, per school, quarantine and errors by
    category, recent refused commands and dead letters; with ``since``, what moved since."""
    rows, counts = await _rows_and_counts(pool, devices=False)
    current = [(r["school_id"], r["snapshot_id"]) for r in rows if r["snapshot_id"]]
    quarantine = await pool.fetch(
        """
        SELECT q.reason, q.domain, count(*) AS n FROM migration.quarantine q
          JOIN unnest($1::text[], $2::text[]) AS c (school_id, snapshot_id) USING (school_id, snapshot_id)
         GROUP BY q.reason, q.domain ORDER BY n DESC, q.reason
        """,
        [s for s, _ in current],
        [n for _, n in current],
    )
    by_reason: Counter[str] = Counter()
    for r in quarantine:
        by_reason[r["reason"]] += r["n"]
    critical = await pool.fetchval(  # schools whose current snapshot's latest validation found a critical issue
        """
        SELECT count(*) FILTER (WHERE NOT ok) FROM (
          SELECT DISTINCT ON (v.school_id) v.ok FROM migration.validation_runs v
            JOIN unnest($1::text[], $2::text[]) AS c (school_id, snapshot_id) USING (school_id, snapshot_id)
           WHERE v.finished_at IS NOT NULL AND v.run_id NOT LIKE 'op-%'
           ORDER BY v.school_id, v.finished_at DESC) latest
        """,
        [s for s, _ in current],
        [n for _, n in current],
    )
    totals = await pool.fetchrow(
        """
        SELECT (SELECT count(*) FROM migration.operator_commands
                 WHERE outcome LIKE $2 || '%' AND ($1::timestamptz IS NULL OR handled_at >= $1)) AS refused,
               (SELECT count(*) FROM migration.recent_dead_letters WHERE $1::timestamptz IS NULL OR at >= $1) AS letters
        """,
        since,
        REFUSED,
    )
    commands = await pool.fetch(
        """
        SELECT handled_at AS at, school_id, action, actor, outcome FROM migration.operator_commands
         WHERE $1::timestamptz IS NULL OR handled_at >= $1 ORDER BY handled_at DESC LIMIT $2
        """,
        since,
        recent,
    )
    letters = await pool.fetch(
        """
        SELECT at, stage, reason, school_id, topic FROM migration.recent_dead_letters
         WHERE $1::timestamptz IS NULL OR at >= $1 ORDER BY at DESC, id DESC LIMIT $2
        """,
        since,
        recent,
    )
    moves = (
        await pool.fetch(
            """
        SELECT t.at, t.school_id, t.from_phase, t.to_phase, t.actor FROM migration.phase_transitions t
         WHERE t.at >= $1 AND NOT EXISTS (SELECT 1 FROM migration.scratch_schools s WHERE s.school_id = t.school_id)
         ORDER BY t.at, t.id
        """,
            since,
        )
        if since
        else []
    )
    phases = Counter(r["phase"] for r in rows)
    return _totals(rows, counts) | {
        "schools": [
            {
                k: r[k]
                for k in (
                    "school_id",
                    "phase",
                    "mode",
                    "snapshot_id",
                    "accounted",
                    "source",
                    "loaded",
                    "quarantined",
                    "updated_at",
                )
            }
            | {
                "progress": round(100.0 * r["accounted"] / r["source"], 1) if r["source"] else 0.0,
                "waits_for": r["waits_for"],
                "next": r["next"],
                "local_copies": r.get("local_copies"),
            }
            for r in rows
        ],
        "phases": dict(sorted(phases.items())),
        "quarantine_by_reason": dict(by_reason.most_common()),
        "error_summary": {
            "critical": int(critical or 0),  # the current snapshots' failed validations
            "consistency": sum(n for reason, n in by_reason.items() if reason in _CONSISTENCY),
            "input": sum(n for reason, n in by_reason.items() if reason not in _CONSISTENCY),
            "refused_commands": int(totals["refused"]),
            "dead_letters": int(totals["letters"]),  # of the newest 1000 kept
        },
        "recent_commands": [dict(c) | {"refused": is_refusal(c["outcome"])} for c in commands],
        "recent_dead_letters": [dict(d) for d in letters],
        "moves": [dict(m) for m in moves],
        "since": since,
    }
