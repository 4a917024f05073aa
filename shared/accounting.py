"""Where every source record of a snapshot stands: source, loaded, quarantined.

Read by the coordinator (is the sync done?), the validator (do counts add up?) and the
CLI (the report). Source counts come from ingest's audit of the snapshot; loaded from
the loader's ledger; quarantined from the quarantine table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from shared.domains import Domain


@dataclass(frozen=True)
class DomainCounts:
    source: int = 0
    loaded: int = 0
    quarantined: int = 0
    parked: int = 0
    """Waiting for a parent row (not yet quarantined as an orphan)."""

    @property
    def accounted(self) -> bool:
        return self.source == self.loaded + self.quarantined + self.parked


def progress(counts: Mapping[Domain, DomainCounts] | None) -> tuple[int, int]:
    """(accounted for, source records) over every domain: loaded or quarantined, of all."""
    values = (counts or {}).values()
    return sum(c.loaded + c.quarantined for c in values), sum(c.source for c in values)


async def record_counts(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, DomainCounts] | None:
    """Per-domain counts for a released snapshot; None when it is not released (yet)."""
    audit = await pool.fetchval(
        "SELECT audit FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2 AND released_at IS NOT NULL",
        school_id, snapshot_id,
    )  # fmt: skip
    if audit is None:
        return None
    source = {Domain(d): int(n) for d, n in (audit.get("source_counts") or {}).items()}
    loaded = await _per_domain(pool, "migration.loaded_records", school_id, snapshot_id)
    quarantined = await _per_domain(pool, "migration.quarantine", school_id, snapshot_id)
    parked = {
        Domain(r["domain"]): int(r["n"])
        for r in await pool.fetch(
            """
            SELECT p.domain, count(*) AS n FROM migration.parked_records p
             WHERE p.school_id = $1 AND p.snapshot_id = $2
               AND NOT EXISTS (SELECT 1 FROM migration.quarantine q
                                WHERE (q.school_id, q.snapshot_id, q.domain, q.record_index)
                                    = (p.school_id, p.snapshot_id, p.domain, p.record_index))
             GROUP BY p.domain
            """,
            school_id, snapshot_id,
        )  # fmt: skip
    }
    return {
        d: DomainCounts(source.get(d, 0), loaded.get(d, 0), quarantined.get(d, 0), parked.get(d, 0)) for d in Domain
    }


async def _per_domain(pool: asyncpg.Pool, table: str, school_id: str, snapshot_id: str) -> dict[Domain, int]:
    # ``table`` is one of two constants above, never input.
    rows = await pool.fetch(
        f"SELECT domain, count(*) AS n FROM {table} WHERE school_id = $1 AND snapshot_id = $2 GROUP BY domain",
        school_id, snapshot_id,
    )  # fmt: skip
    return {Domain(r["domain"]): int(r["n"]) for r in rows}


async def quarantine_entries(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> list[dict[str, object]]:
    rows = await pool.fetch(
        "SELECT domain, legacy_id, record_index, stage, reason FROM migration.quarantine"
        " WHERE school_id = $1 AND snapshot_id = $2 ORDER BY domain, record_index",
        school_id, snapshot_id,
    )  # fmt: skip
    return [dict(r) for r in rows]
