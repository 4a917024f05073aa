"""The coordinator's state in PostgreSQL: each school's phase, the audit trail of every
transition, validation runs and reports. A restarted coordinator resumes from here."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.coordinator.phases import IllegalTransition, Phase, check_transition
from shared.mapping import reverse_record
from shared.messages import MappedRecord, Stage, quarantined
from shared.quarantine import store_quarantine


class CoordinatorStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def phase_of(self, school_id: str) -> tuple[Phase | None, str | None]:
        row = await self.pool.fetchrow(
            "SELECT phase, snapshot_id FROM migration.school_phase WHERE school_id = $1", school_id
        )
        return (Phase(row["phase"]), row["snapshot_id"]) if row else (None, None)

    async def transition(
        self, school_id: str, snapshot_id: str, target: Phase, *, actor: str, reason: str,
        expect: Phase | None = ...,  # type: ignore[assignment]
    ) -> Phase | None:  # fmt: skip
        """Move a school to ``target`` if legal, recording who and why; return the old phase.

        The row lock makes the check-and-move atomic; ``expect`` (when given) refuses the
        move if someone else moved the school meanwhile.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT phase FROM migration.school_phase WHERE school_id = $1 FOR UPDATE", school_id
            )
            current = Phase(row["phase"]) if row else None
            if expect is not ... and current != expect:
                raise IllegalTransition(f"{school_id} is {current}, expected {expect}")
            check_transition(current, target)
            await conn.execute(
                """
                INSERT INTO migration.school_phase (school_id, phase, snapshot_id, updated_at)
                VALUES ($1, $2, $3, now())
                ON CONFLICT (school_id) DO UPDATE
                   SET phase = EXCLUDED.phase, snapshot_id = EXCLUDED.snapshot_id, updated_at = now()
                """,
                school_id, target.value, snapshot_id,
            )  # fmt: skip
            await conn.execute(
                """
                INSERT INTO migration.phase_transitions (school_id, snapshot_id, from_phase, to_phase, actor, reason)
                VALUES ($1, $2, $3, $4, $5, $6)
                """,
                school_id, snapshot_id, current.value if current else None, target.value, actor, reason,
            )  # fmt: skip
            return current

    async def set_snapshot(self, school_id: str, snapshot_id: str) -> None:
        await self.pool.execute(
            "UPDATE migration.school_phase SET snapshot_id = $2, updated_at = now() WHERE school_id = $1",
            school_id, snapshot_id,
        )  # fmt: skip

    async def syncing(self) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT school_id, snapshot_id FROM migration.school_phase WHERE phase = $1", Phase.DUAL_WRITE.value
        )
        return [(r["school_id"], r["snapshot_id"]) for r in rows]

    async def quarantine_orphans(self, school_id: str, snapshot_id: str) -> int:
        """Quarantine the records of a complete snapshot still waiting for a parent: it will not come.

        They stay parked too: should the parent arrive later (a change), the loader writes
        them and withdraws this quarantine entry in the same transaction.
        """
        parked = await self.pool.fetch(
            """
            SELECT p.domain, p.legacy_id, p.record_index, p.record::text AS record,
                   array_agg(r.ref_table ORDER BY r.ref_table) AS waiting_for
              FROM migration.parked_records p
              LEFT JOIN migration.parked_refs r USING (school_id, domain, legacy_id)
             WHERE p.school_id = $1 AND p.snapshot_id = $2
             GROUP BY p.domain, p.legacy_id, p.record_index, p.record::text
            """,
            school_id, snapshot_id,
        )  # fmt: skip
        entries = []
        for row in parked:
            record = MappedRecord.model_validate_json(row["record"])
            tables = sorted({t for t in row["waiting_for"] if t})
            entries.append(
                quarantined(
                    record, stage=Stage.LOADER, reason="orphaned_reference",
                    message=f"its parent row in {', '.join(tables)} never arrived",
                    payload=reverse_record(record.domain, [(r.table, r.values) for r in record.rows]),
                )  # fmt: skip
            )
        await store_quarantine(self.pool, entries)
        return len(entries)

    async def new_validation_run(self, run_id: str, school_id: str, snapshot_id: str) -> None:
        await self.pool.execute(
            "INSERT INTO migration.validation_runs (run_id, school_id, snapshot_id) VALUES ($1, $2, $3)"
            " ON CONFLICT (run_id) DO NOTHING",
            run_id, school_id, snapshot_id,
        )  # fmt: skip

    async def save_report(self, school_id: str, snapshot_id: str, report: dict[str, Any]) -> None:
        await self.pool.execute(
            """
            INSERT INTO migration.reports (school_id, snapshot_id, report) VALUES ($1, $2, $3)
            ON CONFLICT (school_id, snapshot_id) DO UPDATE SET report = EXCLUDED.report, created_at = now()
            """,
            school_id, snapshot_id, report,
        )  # fmt: skip
