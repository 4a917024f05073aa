"""The validator's reads and writes in PostgreSQL."""

from __future__ import annotations

import asyncpg

from services.validator.checks import DomainFacts
from shared.accounting import DomainCounts, record_counts
from shared.domains import Domain
from shared.messages import ValidationCompleted
from shared.tables import PRIMARY_TABLE


async def gather_facts(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[Domain, DomainFacts]:
    counts = await record_counts(pool, school_id, snapshot_id) or {}
    facts: dict[Domain, DomainFacts] = {}
    for domain in Domain:
        c = counts.get(domain, DomainCounts())
        table = PRIMARY_TABLE.get(domain)
        missing: list[str] = []
        if table is not None and c.loaded:
            # The table name comes from the fixed catalogue, never from input.
            rows = await pool.fetch(
                f"SELECT l.legacy_id FROM migration.loaded_records l"
                f" LEFT JOIN {table} t ON t.school_id = l.school_id AND t.legacy_id = l.legacy_id"
                f" WHERE l.school_id = $1 AND l.snapshot_id = $2 AND l.domain = $3 AND t.id IS NULL"
                f" ORDER BY l.legacy_id",
                school_id, snapshot_id, domain.value,
            )  # fmt: skip
            missing = [r["legacy_id"] for r in rows]
        facts[domain] = DomainFacts(c.source, c.loaded, c.quarantined, missing)
    return facts


async def store_result(pool: asyncpg.Pool, result: ValidationCompleted) -> None:
    await pool.execute(
        """
        INSERT INTO migration.validation_runs (run_id, school_id, snapshot_id, ok, result, finished_at)
        VALUES ($1, $2, $3, $4, $5, now())
        ON CONFLICT (run_id) DO UPDATE SET ok = EXCLUDED.ok, result = EXCLUDED.result, finished_at = now()
        """,
        result.run_id, result.school_id, result.snapshot_id, result.ok, result.model_dump(mode="json"),
    )  # fmt: skip
