"""The coordinator's state in PostgreSQL: each school's phase, the audit trail of every
transition, validation runs and reports. A restarted coordinator resumes from here."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.coordinator.phases import IllegalTransition, Phase, check_transition


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
