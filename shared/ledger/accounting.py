"""Where every source record of a snapshot stands: source, loaded, quarantined, parked.

One definition, read by the coordinator (is the sync done?), the loader (may a parent still
come?), the validator (do counts add up?) and the CLI (the report, the progress): the SQL
function ``migration.ledger_counts`` (``shared/migrations/013_ledger.sql``) counts, and
:class:`DomainCounts` says what the counts mean. Source counts come from ingest's audit of
the snapshot (stored before its records are fanned out); loaded from the ledger lines,
quarantined from the quarantine, parked from the records waiting for a parent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg

from shared.domains import Domain
from shared.ledger.snapshots import newest_first_sql


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

_COUNTS = """
SELECT c.school_id, c.snapshot_id, c.domain, c.released, c.source, c.loaded, c.quarantined, c.parked
  FROM migration.ledger_counts($1::text[], $2::text[], $3::text[]) c
"""


async def counts_of(db: asyncpg.Pool | asyncpg.Connection, triples: Iterable[Triple]) -> dict[Triple, tuple[bool, DomainCounts]]:
    """(released, counts) of each triple whose snapshot was audited."""
    wanted = sorted(set(triples))
    if not wanted:
        return {}
    rows = await db.fetch(_COUNTS, *map(list, zip(*wanted, strict=True)))
    return {
        (r["school_id"], r["snapshot_id"], r["domain"]): (
            r["released"],
            DomainCounts(int(r["source"]), int(r["loaded"]), int(r["quarantined"]), int(r["parked"])),
        )
        for r in rows
    }


async def record_counts(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, DomainCounts] | None:
    """Per-domain counts for a released snapshot; None when it is not released (yet)."""
    return (await record_counts_many(pool, [(school_id, snapshot_id)])).get((school_id, snapshot_id))


async def record_counts_many(pool: asyncpg.Pool, pairs: list[Pair]) -> dict[Pair, dict[Domain, DomainCounts]]:
    """:func:`record_counts` of many snapshots in one statement, whatever their number (the
    coordinator's sync poll and the CLI's progress ask for every school at once)."""
    counted = await counts_of(pool, ((s, n, d.value) for s, n in set(pairs) for d in Domain))
    out: dict[Pair, dict[Domain, DomainCounts]] = {}
    for (school_id, snapshot_id, domain), (released, counts) in counted.items():
        if released:
            out.setdefault((school_id, snapshot_id), {})[Domain(domain)] = counts
    return out


async def unaccounted_in_newest(conn: asyncpg.Connection, triples: Iterable[Triple]) -> set[Triple]:
    """Of these (school, snapshot, domain), those whose records may still be on their way:
    of the school's newest audited snapshot (a newer one takes its records over, so an older
    one's counts may never add up), with records missing. A snapshot with no audit (no such
    snapshot) is no reason to wait."""
    wanted = set(triples)
    if not wanted:
        return set()
    newest = await conn.fetch(_NEWEST_AUDITED, sorted({s for s, _, _ in wanted}))
    current = {(r["school_id"], r["snapshot_id"]) for r in newest}
    asked = [t for t in wanted if (t[0], t[1]) in current]
    return {t for t, (_, counts) in (await counts_of(conn, asked)).items() if counts.missing > 0}


_NEWEST_AUDITED = f"""
SELECT DISTINCT ON (a.school_id) a.school_id, a.snapshot_id
  FROM migration.audits a JOIN migration.snapshots s USING (school_id, snapshot_id)
 WHERE a.school_id = ANY($1::text[])
 ORDER BY a.school_id, {newest_first_sql("s")}
"""


#: Rows written to the ledger's counted tables so far (a scalar SQL expression read in
#: constant time, whatever the number of schools: PostgreSQL's own statistics).
LEDGER_WRITES = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables
 WHERE schemaname = 'migration' AND relname = ANY(ARRAY['loaded_records', 'quarantine', 'parked_records'])
"""
