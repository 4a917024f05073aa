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


Pair = tuple[str, str]  # (school id, snapshot id)


async def record_counts(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, DomainCounts] | None:
    """Per-domain counts for a released snapshot; None when it is not released (yet)."""
    return (await record_counts_many(pool, [(school_id, snapshot_id)])).get((school_id, snapshot_id))


async def record_counts_many(pool: asyncpg.Pool, pairs: list[Pair]) -> dict[Pair, dict[Domain, DomainCounts]]:
    """:func:`record_counts` of many snapshots in four statements, whatever their number (the
    coordinator's sync poll and the CLI's progress ask for every school at once)."""
    pairs = sorted(set(pairs))  # a pair given twice must not count twice
    if not pairs:
        return {}
    args = ([s for s, _ in pairs], [n for _, n in pairs])
    audits = await pool.fetch(
        """
        SELECT s.school_id, s.snapshot_id, s.audit FROM migration.snapshots s
          JOIN unnest($1::text[], $2::text[]) AS p (school_id, snapshot_id) USING (school_id, snapshot_id)
         WHERE s.released_at IS NOT NULL
        """,
        *args,
    )
    counted: dict[str, dict[tuple[str, str, Domain], int]] = {}
    for name, query in _COUNTS.items():
        counted[name] = {
            (r["school_id"], r["snapshot_id"], Domain(r["domain"])): int(r["n"]) for r in await pool.fetch(query, *args)
        }
    out: dict[Pair, dict[Domain, DomainCounts]] = {}
    for row in audits:
        school_id, snapshot_id = row["school_id"], row["snapshot_id"]
        source = {Domain(d): int(n) for d, n in ((row["audit"] or {}).get("source_counts") or {}).items()}
        out[(school_id, snapshot_id)] = {
            d: DomainCounts(source.get(d, 0), *(counted[name].get((school_id, snapshot_id, d), 0) for name in _COUNTS))
            for d in Domain
        }
    return out


# Grouped counts per (school, snapshot, domain), in DomainCounts' field order after source.
_PAIRS = "JOIN unnest($1::text[], $2::text[]) AS p (school_id, snapshot_id) USING (school_id, snapshot_id)"
_COUNTS = {
    "loaded": f"SELECT school_id, snapshot_id, domain, count(*) AS n FROM migration.loaded_records {_PAIRS}"
    " GROUP BY school_id, snapshot_id, domain",
    "quarantined": f"SELECT school_id, snapshot_id, domain, count(*) AS n FROM migration.quarantine {_PAIRS}"
    " GROUP BY school_id, snapshot_id, domain",
    "parked": f"""
        SELECT pr.school_id, pr.snapshot_id, pr.domain, count(*) AS n FROM migration.parked_records pr {_PAIRS}
         WHERE NOT EXISTS (SELECT 1 FROM migration.quarantine q
                            WHERE (q.school_id, q.snapshot_id, q.domain, q.record_index)
                                = (pr.school_id, pr.snapshot_id, pr.domain, pr.record_index))
         GROUP BY pr.school_id, pr.snapshot_id, pr.domain""",
}


async def quarantine_entries(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> list[dict[str, object]]:
    rows = await pool.fetch(
        "SELECT domain, legacy_id, record_index, stage, reason FROM migration.quarantine"
        " WHERE school_id = $1 AND snapshot_id = $2 ORDER BY domain, record_index",
        school_id,
        snapshot_id,
    )
    return [dict(r) for r in rows]
