"""Where every source record of a snapshot stands: source, loaded, quarantined, parked.

One definition, read by the coordinator (is the sync done?), the loader (may a parent still
come?), the validator (do counts add up?) and the CLI (the report, the progress):
:func:`counts_of` counts, and :class:`DomainCounts` says what the counts mean. Source counts come from ingest's audit of
the snapshot (stored before its records are fanned out); loaded from the ledger lines,
quarantined from the quarantine, parked from the records waiting for a parent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg

from shared.catalog.domains import Domain
from shared.ledger.snapshots import newest_first_sql, own_sql


@dataclass(frozen=True)
class DomainCounts:
    source: int = 0
    loaded: int = 0
    quarantined: int = 0
    parked: int = 0
    """Waiting for a parent row (not yet quarantined as an orphan)."""

    @property
    def arrived(self) -> int:
        """Records that stand somewhere: loaded, quarantined, or waiting for a parent."""
        return self.loaded + self.quarantined + self.parked

    @property
    def missing(self) -> int:
        """Source records not arrived yet (on their way, or lost in flight)."""
        return self.source - self.arrived

    @property
    def accounted(self) -> bool:
        """Every source record stands somewhere (the sync may be proven)."""
        return self.missing == 0

    @property
    def settled(self) -> bool:
        """Every source record's outcome is final: as many loaded or quarantined as the
        source has (what the validator requires; parked records are not final)."""
        return self.source == self.loaded + self.quarantined


def progress(counts: Mapping[Domain, DomainCounts] | None) -> tuple[int, int]:
    """(accounted for, source records) over every domain: records that stand somewhere, of all."""
    values = (counts or {}).values()
    return sum(c.arrived for c in values), sum(c.source for c in values)


Pair = tuple[str, str]  # (school id, snapshot id)
Triple = tuple[str, str, str]  # (school id, snapshot id, domain)

# The one definition of the counts, per (school, snapshot, domain) of the snapshots asked
# about: grouped statements over the snapshots' index ranges (measured: one SQL function
# doing the same cost 13x as much, its plan made without knowing how many were asked).
_PAIRS = "JOIN unnest($1::text[], $2::text[]) AS p (school_id, snapshot_id) USING (school_id, snapshot_id)"
# Source counts: the audit the release carries; before the release, the one ingest stored
# first (the loader asks about snapshots on their way). A snapshot neither audited nor
# released is not counted.
_SOURCES = f"""
SELECT s.school_id, s.snapshot_id, s.released_at IS NOT NULL AS released,
       coalesce(s.audit, a.summary) -> 'source_counts' AS source
  FROM migration.snapshots s {_PAIRS}
  LEFT JOIN migration.audits a USING (school_id, snapshot_id)
 WHERE s.released_at IS NOT NULL OR a.school_id IS NOT NULL
"""
# In DomainCounts' field order after source: a ledger line is loaded for its snapshot, a
# quarantine entry quarantined, a parked record parked unless it is in quarantine too (an
# orphan stays parked in case its parent comes: counted once, as quarantined) or has its
# snapshot's ledger line (another device's copy of it outvoted it, then it came again: counted
# once, as loaded).
_COUNTS = {
    # The lines of each (school, snapshot, domain), kept by PostgreSQL per statement (migration 020).
    "loaded": f"SELECT school_id, snapshot_id, domain, n FROM migration.loaded_tallies {_PAIRS} WHERE n <> 0",
    "quarantined": f"SELECT school_id, snapshot_id, domain, count(*) AS n FROM migration.quarantine {_PAIRS}"
    " GROUP BY school_id, snapshot_id, domain",
    # ``held``: the parked write has a quarantine entry too, kept by PostgreSQL as either
    # side changes (migration 019); the partial index holds only the writes that wait.
    "parked": f"""
        SELECT pr.school_id, pr.snapshot_id, pr.domain, count(*) AS n FROM migration.parked_records pr {_PAIRS}
         WHERE NOT pr.held
           AND NOT EXISTS (SELECT 1 FROM migration.loaded_records l
                            WHERE (l.school_id, l.domain, l.legacy_id, l.snapshot_id, l.record_index)
                                = (pr.school_id, pr.domain, pr.legacy_id, pr.snapshot_id, pr.record_index))
         GROUP BY pr.school_id, pr.snapshot_id, pr.domain""",
}


async def counts_of(
    db: asyncpg.Pool | asyncpg.Connection, pairs: Iterable[Pair]
) -> dict[Pair, tuple[bool, dict[Domain, DomainCounts]]]:
    """(released, counts per domain) of each snapshot asked about that was audited or
    released, in four statements whatever their number."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    args = ([s for s, _ in wanted], [n for _, n in wanted])
    sources = await db.fetch(_SOURCES, *args)
    counted: dict[str, dict[Triple, int]] = {}
    for name, query in _COUNTS.items():
        counted[name] = {(r["school_id"], r["snapshot_id"], r["domain"]): int(r["n"]) for r in await db.fetch(query, *args)}
    out: dict[Pair, tuple[bool, dict[Domain, DomainCounts]]] = {}
    for row in sources:
        pair = (row["school_id"], row["snapshot_id"])
        source = {Domain(d): int(n) for d, n in (row["source"] or {}).items()}
        out[pair] = (
            row["released"],
            {d: DomainCounts(source.get(d, 0), *(counted[name].get((*pair, d.value), 0) for name in _COUNTS)) for d in Domain},
        )
    return out


async def record_counts(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, DomainCounts] | None:
    """Per-domain counts for a released snapshot; None when it is not released (yet)."""
    return (await record_counts_many(pool, [(school_id, snapshot_id)])).get((school_id, snapshot_id))


async def record_counts_many(pool: asyncpg.Pool, pairs: list[Pair]) -> dict[Pair, dict[Domain, DomainCounts]]:
    """:func:`record_counts` of many snapshots at once (the coordinator's sync poll and the
    CLI's progress ask for every school at once)."""
    return {pair: counts for pair, (released, counts) in (await counts_of(pool, pairs)).items() if released}


async def unaccounted_in_newest(conn: asyncpg.Connection, triples: Iterable[Triple]) -> set[Triple]:
    """Of these (school, snapshot, domain), those whose records may still be on their way:
    of its device's newest audited snapshot (a newer one of the device takes its records
    over, so an older one's counts may never add up), with records missing. A snapshot with no audit (no such
    snapshot) is no reason to wait."""
    wanted = set(triples)
    if not wanted:
        return set()
    newest = await conn.fetch(_NEWEST_AUDITED, sorted({s for s, _, _ in wanted}))
    current = {(r["school_id"], r["snapshot_id"]) for r in newest}
    counted = await counts_of(conn, {(s, n) for s, n, _ in wanted if (s, n) in current})
    return {(s, n, d) for s, n, d in wanted if (s, n) in counted and counted[(s, n)][1][Domain(d)].missing > 0}


_NEWEST_AUDITED = f"""
SELECT DISTINCT ON (a.school_id, s.device_id) a.school_id, a.snapshot_id
  FROM migration.audits a JOIN migration.snapshots s USING (school_id, snapshot_id)
 WHERE a.school_id = ANY($1::text[]) AND {own_sql("s")}
 ORDER BY a.school_id, s.device_id, {newest_first_sql("s")}
"""


#: Rows written to the ledger's counted tables so far (a scalar SQL expression read in
#: constant time, whatever the number of schools: PostgreSQL's own statistics).
LEDGER_WRITES = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables
 WHERE schemaname = 'migration' AND relname = ANY(ARRAY['loaded_records', 'quarantine', 'parked_records'])
"""
