"""The coordinator's state in PostgreSQL: each school's phase, the audit trail of every
transition, validation runs and reports. A restarted coordinator resumes from here."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from services.coordinator.cutover import Attempt, LeaseLost
from services.coordinator.phases import IllegalTransition, Phase, check_transition
from shared.catalog.domains import Domain
from shared.catalog.tables import PRIMARY_TABLE
from shared.ledger import deletions, device_store, parking
from shared.ledger.parking import ParkedSweep
from shared.ledger.schools import phase_of, request_run, schools, transitions
from shared.ledger.snapshots import adopted_sql, later_sql, newest_first_sql, rank_sql
from shared.platform.db import pg_json
from shared.platform.outbox import Outbound, enqueue
from shared.wire.messages import (
    AuditSummary,
    Mode,
    OperatorCommand,
    SchoolMode,
    SnapshotReleased,
)

_MODE_COLUMNS = ("maintenance", "reason", "phase", "updated_at", "clear_local")


@dataclass(frozen=True)
class SentBarrier:
    barrier_id: str
    sent_at: datetime
    age_s: float
    passed: bool
    """Acknowledged on every path: everything ingest had before ``sent_at`` is written."""


class CoordinatorStore:
    def __init__(self, pool: asyncpg.Pool, outbox: str = "coordinator") -> None:
        self.pool = pool
        self.outbox = outbox  # the outbox rows this service writes and drains (its topic prefix and name)

    async def phase_of(self, school_id: str) -> tuple[Phase | None, str | None]:
        phase, snapshot_id = await phase_of(self.pool, school_id)
        return (Phase(phase) if phase else None), snapshot_id

    async def transition(
        self,
        school_id: str,
        snapshot_id: str,
        target: Phase,
        *,
        actor: str,
        reason: str,
        expect: Phase | None = ...,  # type: ignore[assignment]
        then: Sequence[Outbound] = (),
    ) -> Phase | None:
        """Move a school to ``target`` if legal, recording who and why; return the old phase.

        The row lock makes the check-and-move atomic; ``expect`` (when given) refuses the
        move if someone else moved the school meanwhile. ``then``: what the move announces,
        written to the outbox in the same transaction (``shared.platform.outbox``).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await self._move(conn, school_id, snapshot_id, target, actor=actor, reason=reason, expect=expect)
            await enqueue(conn, then, self.outbox)
            return moved

    async def _move(
        self,
        conn: asyncpg.Connection,
        school_id: str,
        snapshot_id: str,
        target: Phase,
        *,
        actor: str,
        reason: str,
        expect: Phase | None = ...,  # type: ignore[assignment]
    ) -> Phase | None:
        row = await conn.fetchrow("SELECT phase FROM migration.school_phase WHERE school_id = $1 FOR UPDATE", school_id)
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
            school_id,
            target.value,
            snapshot_id,
        )
        await conn.execute(
            """
            INSERT INTO migration.phase_transitions (school_id, snapshot_id, from_phase, to_phase, actor, reason)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            school_id,
            snapshot_id,
            current.value if current else None,
            target.value,
            actor,
            reason,
        )
        return current

    async def begin_cutover(self, school_id: str, actor: str, reason: str) -> Attempt | str:
        """``validated`` → ``cutover`` and the attempt's row, in one transaction (a crash never
        leaves a school in cutover without an attempt to resume); else why not."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT phase, snapshot_id FROM migration.school_phase WHERE school_id = $1 FOR UPDATE", school_id
            )
            if row is None or row["phase"] != Phase.VALIDATED.value or row["snapshot_id"] is None:
                return f"refused: the school is {row['phase'] if row else 'unknown'}, cutover needs validated"
            if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM migration.cutovers WHERE school_id = $1 AND status = 'running')", school_id
            ):
                return "a cutover of this school is already running"
            await self._move(
                conn, school_id, row["snapshot_id"], Phase.CUTOVER, actor=actor, reason=reason, expect=Phase.VALIDATED
            )
            attempt_id = str(uuid.uuid4())
            await conn.execute(
                "INSERT INTO migration.cutovers (attempt_id, school_id, actor, reason) VALUES ($1, $2, $3, $4)",
                attempt_id,
                school_id,
                actor,
                reason,
            )
            return Attempt(attempt_id, school_id, row["snapshot_id"], None)

    async def end_cutover(
        self, attempt: Attempt, target: Phase, status: str, *, actor: str, reason: str, error: str | None = None
    ) -> bool:
        """Close a running attempt and, if the school is still in ``cutover``, move it to
        ``target``: one transaction, idempotent (a retry after a crash, or a second runner,
        finds it closed and does nothing). True when this call closed it."""
        async with self.pool.acquire() as conn, conn.transaction():
            await _fenced(conn, attempt)
            closed = await conn.fetchval(
                "UPDATE migration.cutovers SET status = $2, error = $3, finished_at = now()"
                " WHERE attempt_id = $1 AND status = 'running' RETURNING true",
                attempt.attempt_id,
                status,
                error,
            )
            if not closed:
                return False
            row = await conn.fetchrow(
                "SELECT phase FROM migration.school_phase WHERE school_id = $1 FOR UPDATE", attempt.school_id
            )
            if row is not None and row["phase"] == Phase.CUTOVER.value:
                await self._move(
                    conn, attempt.school_id, attempt.snapshot_id, target, actor=actor, reason=reason, expect=Phase.CUTOVER
                )
            return True

    async def set_snapshot(self, school_id: str, snapshot_id: str) -> None:
        await self.pool.execute(
            "UPDATE migration.school_phase SET snapshot_id = $2, updated_at = now() WHERE school_id = $1",
            school_id,
            snapshot_id,
        )

    async def syncing(self) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT school_id, snapshot_id FROM migration.school_phase WHERE phase = $1", Phase.DUAL_WRITE.value
        )
        return [(r["school_id"], r["snapshot_id"]) for r in rows]

    async def sweep_parked(self, school_id: str, snapshot_id: str, redrive_after_s: float = 10.0) -> ParkedSweep:
        """Settle the records of a complete snapshot still parked (``shared.ledger.parking.sweep``)."""
        return await parking.sweep(self.pool, school_id, snapshot_id, redrive_after_s)

    async def save_report(self, school_id: str, snapshot_id: str, report: dict[str, Any]) -> None:
        await self.pool.execute(
            """
            INSERT INTO migration.reports (school_id, snapshot_id, report) VALUES ($1, $2, $3)
            ON CONFLICT (school_id, snapshot_id) DO UPDATE SET report = EXCLUDED.report, created_at = now()
            """,
            school_id,
            snapshot_id,
            report,
        )

    # ------------------------------------------------------------------ modes

    async def set_mode(
        self,
        school_id: str,
        mode: Mode,
        maintenance: bool,
        reason: str,
        attempt: Attempt | None = None,
        announce: Callable[[SchoolMode], Awaitable[None]] | None = None,
        clear_local: bool = False,
        expect: tuple[Phase, Mode] | None = None,
    ) -> SchoolMode | None:
        """``attempt``: a cutover's write, made only under the epoch it claimed (else LeaseLost).
        ``announce``: run before the write commits (its failure undoes it). ``expect``: written
        only while the school is in this phase and mode (checked under the phase's row lock,
        which every phase move takes: a rollback meanwhile wins); else None, nothing written."""
        async with self.pool.acquire() as conn, conn.transaction():
            if attempt is not None:
                await _fenced(conn, attempt)
            if expect is not None:
                found = await conn.fetchrow(
                    """
                    SELECT p.phase, m.mode FROM migration.school_phase p LEFT JOIN migration.school_modes m USING (school_id)
                     WHERE p.school_id = $1 FOR UPDATE OF p
                    """,
                    school_id,
                )
                if found is None or (found["phase"], found["mode"]) != (expect[0].value, expect[1].value):
                    return None
            row = await conn.fetchrow(
                """
                INSERT INTO migration.school_modes (school_id, mode, maintenance, reason, updated_at, clear_local)
                VALUES ($1, $2, $3, $4, now(), $5)
                ON CONFLICT (school_id) DO UPDATE
                   SET mode = EXCLUDED.mode, maintenance = EXCLUDED.maintenance, reason = EXCLUDED.reason, updated_at = now(),
                       clear_local = EXCLUDED.clear_local
                RETURNING updated_at
                """,
                school_id,
                mode.value,
                maintenance,
                reason,
                clear_local,
            )
            phase = await conn.fetchval("SELECT phase FROM migration.school_phase WHERE school_id = $1", school_id)
            record = SchoolMode(
                school_id=school_id,
                mode=mode,
                maintenance=maintenance,
                reason=reason,
                phase=phase or "unknown",
                updated_at=row["updated_at"],
                clear_local=clear_local,
            )
            if announce is not None:
                await announce(record)
        return record

    async def mode_of(self, school_id: str) -> SchoolMode | None:
        return await self._mode(self.pool, school_id)

    async def announce_mode(self, school_id: str, announce: Callable[[SchoolMode], Awaitable[None]]) -> bool:
        """The school's stored mode announced again as it is, under its row's lock: a mode
        written meanwhile (``set_mode`` takes the same lock) is announced after it, never
        before. False for a school with no mode."""
        async with self.pool.acquire() as conn, conn.transaction():
            record = await self._mode(conn, school_id, lock=True)
            if record is None:
                return False
            await announce(record)
        return True

    @staticmethod
    async def _mode(db: asyncpg.Pool | asyncpg.Connection, school_id: str, *, lock: bool = False) -> SchoolMode | None:
        row = await db.fetchrow(
            """
            SELECT m.mode, m.maintenance, m.reason, m.updated_at, m.clear_local, coalesce(p.phase, 'unknown') AS phase
              FROM migration.school_modes m LEFT JOIN migration.school_phase p USING (school_id)
             WHERE m.school_id = $1
            """
            + (" FOR UPDATE OF m" if lock else ""),
            school_id,
        )
        if row is None:
            return None
        return SchoolMode(school_id=school_id, mode=Mode(row["mode"]), **{k: row[k] for k in _MODE_COLUMNS})

    async def past_grace(self, grace_s: float) -> list[str]:
        """Schools cut over at least ``grace_s`` ago, never rolled back since, whose clients
        have not been told to clear their local copy yet."""
        rows = await self.pool.fetch(
            """
            SELECT p.school_id FROM migration.school_phase p JOIN migration.school_modes m USING (school_id)
             WHERE p.phase = 'completed' AND m.mode = 'api' AND NOT m.clear_local AND NOT m.maintenance
               AND p.updated_at <= now() - make_interval(secs => $1)
             ORDER BY p.school_id LIMIT 100
            """,
            grace_s,
        )
        return [r["school_id"] for r in rows]

    async def schools(self) -> list[dict[str, Any]]:
        """Every school's phase, snapshot and mode (``shared.ledger.schools``)."""
        return await schools(self.pool)

    # ------------------------------------------------------------------ cutover attempts

    async def running_attempts(self) -> list[Attempt]:
        rows = await self.pool.fetch(
            """
            SELECT c.attempt_id, c.school_id, p.snapshot_id, c.step FROM migration.cutovers c
              JOIN migration.school_phase p USING (school_id)
             WHERE c.status = 'running' ORDER BY c.started_at
            """
        )
        return [Attempt(r["attempt_id"], r["school_id"], r["snapshot_id"], r["step"]) for r in rows]

    async def running_attempt(self, school_id: str) -> bool:
        """Whether a cutover of the school is running (in any coordinator replica)."""
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM migration.cutovers WHERE school_id = $1 AND status = 'running')", school_id
            )
        )

    async def claim_attempt(self, attempt: Attempt) -> Attempt | None:
        """The attempt under a new epoch, claimed by the caller (who holds the school's cutover
        lease): from now on every write under an older epoch is refused. Its last step is the
        one the claim found (a runner before may have moved on until then). None: it ended."""
        row = await self.pool.fetchrow(
            "UPDATE migration.cutovers SET epoch = epoch + 1 WHERE attempt_id = $1 AND status = 'running' RETURNING epoch, step",
            attempt.attempt_id,
        )
        return None if row is None else replace(attempt, epoch=row["epoch"], last_step=row["step"])

    async def step_done(self, attempt: Attempt, step: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await _fenced(conn, attempt)
            await conn.execute("UPDATE migration.cutovers SET step = $2 WHERE attempt_id = $1", attempt.attempt_id, step)

    async def mark_rolling_back(self, attempt: Attempt, why: str) -> None:
        """The attempt is being rolled back (so a resumed one finishes the rollback, never the cutover)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await _fenced(conn, attempt)
            await conn.execute(
                "UPDATE migration.cutovers SET step = 'rolling_back', error = $2 WHERE attempt_id = $1 AND status = 'running'",
                attempt.attempt_id,
                why,
            )

    async def attempt_error(self, attempt: Attempt) -> str | None:
        return await self.pool.fetchval("SELECT error FROM migration.cutovers WHERE attempt_id = $1", attempt.attempt_id)

    # ------------------------------------------------------------------ barriers

    async def new_barrier(self, barrier_id: str, school_id: str, expected: int, snapshot_id: str | None = None) -> None:
        await self.pool.execute(
            "INSERT INTO migration.barriers (barrier_id, school_id, expected, snapshot_id) VALUES ($1, $2, $3, $4)",
            barrier_id,
            school_id,
            expected,
            snapshot_id,
        )

    async def sync_barrier(self, school_id: str, snapshot_id: str, since: Any) -> SentBarrier | None:
        """The latest barrier sent to prove ``snapshot_id``'s sync since ``since``, with its acks."""
        row = await self.pool.fetchrow(
            """
            SELECT b.barrier_id, b.expected, b.sent_at, now() - b.sent_at AS age,
                   (SELECT count(*) FROM migration.barrier_acks a WHERE a.barrier_id = b.barrier_id) AS acked
              FROM migration.barriers b
             WHERE b.school_id = $1 AND b.snapshot_id = $2 AND b.sent_at >= $3
             ORDER BY b.sent_at DESC LIMIT 1
            """,
            school_id,
            snapshot_id,
            since,
        )
        if row is None:
            return None
        return SentBarrier(row["barrier_id"], row["sent_at"], row["age"].total_seconds(), row["acked"] >= row["expected"])

    async def last_passed_barrier(self, school_id: str) -> Any:
        """When the school's latest barrier acknowledged on every path was sent (None: none was)."""
        return await self.pool.fetchval(
            """
            SELECT max(b.sent_at) FROM migration.barriers b
             WHERE b.school_id = $1
               AND (SELECT count(*) FROM migration.barrier_acks a WHERE a.barrier_id = b.barrier_id) >= b.expected
            """,
            school_id,
        )

    async def verified_export_since(self, school_id: str, since: Any) -> dict[str, Any] | None:
        """The school's latest export made after ``since``, verified (``schoolmig export --verify``),
        and whole: one that left domains out (``mockdata_export``) is no way back."""
        row = await self.pool.fetchrow(
            "SELECT export_id, sha256, format, verified_with FROM migration.exports"
            " WHERE school_id = $1 AND verified_at IS NOT NULL AND created_at >= $2 AND left_out = '{}'::jsonb"
            " ORDER BY created_at DESC LIMIT 1",
            school_id,
            since,
        )
        return dict(row) if row else None

    async def unheard_releases(self, older_than_s: float = 10.0) -> list[SnapshotReleased]:
        """Snapshots ingest released that the coordinator never acted on (their event was lost,
        e.g. with a broker, or ingest stopped between marking and announcing): released a while
        ago, with no report, and newer than the school's current snapshot (or the school
        unknown) and not superseded, or withheld (superseded, unchanged): those get their own
        last word. Rebuilt from the database."""
        rows = await self.pool.fetch(
            f"""
            SELECT s.school_id, s.snapshot_id, s.format, s.taken_at, s.sha256, s.audit,
                   coalesce(b.sha256 = s.sha256, false) AS backup_verified
              FROM migration.snapshots s
              LEFT JOIN migration.backups b USING (school_id, snapshot_id)
              LEFT JOIN migration.school_phase p USING (school_id)
              LEFT JOIN migration.snapshots cur ON cur.school_id = p.school_id AND cur.snapshot_id = p.snapshot_id
             WHERE s.released_at IS NOT NULL AND s.released_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM migration.reports r WHERE (r.school_id, r.snapshot_id) = (s.school_id, s.snapshot_id))
               AND ((p.school_id IS NULL OR (cur.snapshot_id IS NOT NULL
                     AND {later_sql(rank_sql("s"), rank_sql("cur"))})
                     AND NOT EXISTS (SELECT 1 FROM migration.superseded_snapshots x
                                      WHERE (x.school_id, x.snapshot_id) = (s.school_id, s.snapshot_id)))
                    -- withheld by ingest (a later reading of its device, or the same file again) and
                    -- never answered: advance() gives it its own last word
                    OR s.unchanged_of IS NOT NULL
                    OR EXISTS (SELECT 1 FROM migration.superseded_snapshots x
                                WHERE (x.school_id, x.snapshot_id) = (s.school_id, s.snapshot_id)))
             ORDER BY s.released_at LIMIT 50
            """,
            older_than_s,
        )
        return [
            SnapshotReleased(
                school_id=r["school_id"],
                snapshot_id=r["snapshot_id"],
                format=r["format"],
                taken_at=r["taken_at"],
                sha256=r["sha256"],
                backup_verified=r["backup_verified"],
                audit=AuditSummary.model_validate(r["audit"]),
            )
            for r in rows
            if r["audit"] is not None
        ]

    async def has_changes(self, school_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM migration.changes WHERE school_id = $1)", school_id))

    async def barrier_acks(self, barrier_id: str) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM migration.barrier_acks WHERE barrier_id = $1", barrier_id))

    # ------------------------------------------------------------------ evidence for the cutover

    async def records_held(self, school_id: str, domain: Domain) -> int:
        """The school's live records of a domain (soft-deleted ones are not)."""
        # The table name comes from the fixed catalogue.
        return int(
            await self.pool.fetchval(
                f"SELECT count(DISTINCT t.legacy_id) FROM {PRIMARY_TABLE[domain]} t"
                f" WHERE t.school_id = $1 AND {deletions.live_sql('t')}",
                school_id,
            )
        )

    async def changed_since(self, school_id: str, since: Any) -> dict[str, int]:
        """Per domain, the records with a change ingest received at or after ``since``."""
        if since is None:
            return {}
        rows = await self.pool.fetch(
            "SELECT domain, count(DISTINCT record_id) AS n FROM migration.changes WHERE school_id = $1 AND received_at >= $2"
            " GROUP BY domain",
            school_id,
            since,
        )
        return {r["domain"]: int(r["n"]) for r in rows}

    async def new_validation_run(self, run_id: str, school_id: str, snapshot_id: str) -> None:
        await request_run(self.pool, run_id, school_id, snapshot_id)

    async def transitions(self, school_id: str) -> list[dict[str, Any]]:
        return await transitions(self.pool, school_id)

    async def entered_at(self, school_id: str, phase: Phase) -> Any:
        return await self.pool.fetchval(
            "SELECT max(at) FROM migration.phase_transitions WHERE school_id = $1 AND to_phase = $2", school_id, phase.value
        )

    # ------------------------------------------------------------------ the audit gate

    async def save_override(self, school_id: str, snapshot_id: str, actor: str, reason: str) -> None:
        await self.pool.execute(
            "INSERT INTO migration.audit_overrides (school_id, snapshot_id, actor, reason) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (school_id, snapshot_id) DO UPDATE SET actor = EXCLUDED.actor, reason = EXCLUDED.reason, at = now()",
            school_id,
            snapshot_id,
            actor,
            reason,
        )

    async def override_of(self, school_id: str, snapshot_id: str) -> str | None:
        row = await self.pool.fetchrow(
            "SELECT actor, reason FROM migration.audit_overrides WHERE school_id = $1 AND snapshot_id = $2",
            school_id,
            snapshot_id,
        )
        return f"{row['reason']} ({row['actor']})" if row else None

    async def mark_deleted(self, school_id: str, snapshot_id: str) -> int:
        """Mark what ``snapshot_id`` (the school's newest, fully accounted for) no longer has
        deleted (``shared.ledger.deletions.mark_deleted``); how many were marked now."""
        return await deletions.mark_deleted(self.pool, school_id, snapshot_id)

    async def deleted_counts(self, school_id: str) -> dict[str, int]:
        """Per domain, the school's records marked deleted (by a newer snapshot)."""
        return await deletions.deleted_counts(self.pool, school_id)

    async def device_snapshots(self, school_id: str) -> set[str]:
        """Each of the school's devices' newest derived snapshot."""
        return await device_store.device_snapshots(self.pool, school_id)

    async def device_conflicts(self, school_id: str) -> list[dict[str, object]]:
        """The records the school's devices disagree on (``shared.ledger.devices.conflicts``)."""
        return await deletions.device_conflicts(self.pool, school_id)

    async def unchanged_of(self, school_id: str, snapshot_id: str) -> str | None:
        """The snapshot ``snapshot_id`` is the same file as (its device's latest, found by ingest)."""
        return await self.pool.fetchval(
            "SELECT unchanged_of FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2", school_id, snapshot_id
        )

    async def report_of(self, school_id: str, snapshot_id: str) -> dict[str, Any] | None:
        report = await self.pool.fetchval(
            "SELECT report FROM migration.reports WHERE school_id = $1 AND snapshot_id = $2", school_id, snapshot_id
        )
        return dict(report) if report is not None else None

    async def superseded_by(self, school_id: str, snapshot_id: str) -> tuple[str, bool] | None:
        """A released snapshot of the same device read after ``snapshot_id`` (which then
        arrived late: that later reading of the browser holds what it still has), and whether
        the two were read at the same instant (then the snapshot order's second key, the id,
        decided): noted once in ``migration.superseded_snapshots``. Another device's snapshot
        never supersedes: every browser's data is kept (``shared.ledger.devices``)."""
        noted = await self.pool.fetchrow(  # ingest found a later reading of its device (maybe not released yet)
            "SELECT x.superseded_by, s.taken_at = n.taken_at AS same_instant FROM migration.superseded_snapshots x"
            " JOIN migration.snapshots s ON (s.school_id, s.snapshot_id) = (x.school_id, x.snapshot_id)"
            " LEFT JOIN migration.snapshots n ON (n.school_id, n.snapshot_id) = (x.school_id, x.superseded_by)"
            " WHERE x.school_id = $1 AND x.snapshot_id = $2",
            school_id,
            snapshot_id,
        )
        if noted is not None:
            return noted["superseded_by"], bool(noted["same_instant"])
        row = await self.pool.fetchrow(
            f"""
            WITH newer AS (
              SELECT cur.snapshot_id, cur.taken_at = late.taken_at AS same_instant
                FROM migration.snapshots late
                JOIN migration.snapshots cur ON cur.school_id = late.school_id AND cur.device_id = late.device_id
               WHERE late.school_id = $1 AND late.snapshot_id = $2 AND cur.snapshot_id <> $2 AND {adopted_sql("cur")}
                 AND {later_sql(rank_sql("cur"), rank_sql("late"))}
               ORDER BY {newest_first_sql("cur")} LIMIT 1),
            noted AS (
              INSERT INTO migration.superseded_snapshots (school_id, snapshot_id, superseded_by)
              SELECT $1, $2, snapshot_id FROM newer ON CONFLICT DO NOTHING)
            SELECT snapshot_id, same_instant FROM newer
            """,
            school_id,
            snapshot_id,
        )
        return (row["snapshot_id"], bool(row["same_instant"])) if row is not None else None

    async def command_seen(self, command_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT 1 FROM migration.operator_commands WHERE command_id = $1", command_id))

    async def command_done(self, command: OperatorCommand, outcome: str) -> None:
        """The command acted on, and what it came to (the CLI that sent it reads the answer)."""
        await self.pool.execute(
            "INSERT INTO migration.operator_commands (command_id, school_id, action, actor, issued_at, outcome, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            command.command_id,
            command.school_id,
            command.action,
            command.actor,
            command.issued_at,
            outcome,
            command.reason,
        )

    async def broker_loss_pending(self, marker: str, marks: dict[tuple[str, int], int]) -> bool:
        """Whether a recovery from a broker's loss is due: a high-water mark below what was seen
        before on a partition seen both times (the broker lost what it held), or a loss seen
        earlier whose recovery has not finished (:meth:`broker_recovered`). The marks seen now
        replace those of these topics, partitions gone included, in the same transaction."""
        topics = sorted({t for t, _ in marks})
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetch(
                'SELECT topic, "partition", high_water FROM migration.broker_marks WHERE topic = ANY($1::text[]) FOR UPDATE',
                topics,
            )
            if any(
                (r["topic"], r["partition"]) in marks and r["high_water"] > marks[(r["topic"], r["partition"])] for r in before
            ):
                await conn.execute("INSERT INTO migration.broker_losses (marker) VALUES ($1) ON CONFLICT DO NOTHING", marker)
            await conn.execute("DELETE FROM migration.broker_marks WHERE topic = ANY($1::text[])", topics)
            await conn.execute(
                """
                INSERT INTO migration.broker_marks (topic, "partition", high_water)
                SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
                """,
                [t for t, _ in marks],
                [p for _, p in marks],
                list(marks.values()),
            )
            return bool(await conn.fetchval("SELECT 1 FROM migration.broker_losses WHERE marker = $1", marker))

    async def broker_recovered(self, marker: str) -> None:
        await self.pool.execute("DELETE FROM migration.broker_losses WHERE marker = $1", marker)

    async def block(self, event: SnapshotReleased) -> None:
        await self.pool.execute(
            "INSERT INTO migration.blocked_snapshots (school_id, snapshot_id, event) VALUES ($1, $2, $3)"
            " ON CONFLICT (school_id, snapshot_id) DO UPDATE SET event = EXCLUDED.event",  # audited again: its newest audit
            event.school_id,
            event.snapshot_id,
            pg_json(event.model_dump(mode="json")),
        )

    async def blocked(self, school_id: str, snapshot_id: str) -> SnapshotReleased | None:
        event = await self.pool.fetchval(
            "SELECT event FROM migration.blocked_snapshots WHERE school_id = $1 AND snapshot_id = $2", school_id, snapshot_id
        )
        return SnapshotReleased.model_validate(event) if event else None

    async def set_zone(self, school_id: str, zone: str, actor: str, reason: str) -> str | None:
        """An operator's zone for the school (``shared.catalog.timezones``): None when it is set; the
        zone its records were mapped in when that is another (then nothing changes)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                INSERT INTO migration.school_zones AS z (school_id, zone, source, set_by, reason)
                VALUES ($1, $2, 'operator', $3, $4)
                ON CONFLICT (school_id) DO UPDATE
                   SET zone = EXCLUDED.zone, source = 'operator', set_by = EXCLUDED.set_by, reason = EXCLUDED.reason,
                       set_at = now()
                 WHERE z.pinned_at IS NULL OR z.zone = EXCLUDED.zone
                RETURNING zone
                """,
                school_id,
                zone,
                actor,
                reason,
            )
            if row is not None:
                return None
            held = await conn.fetchval("SELECT zone FROM migration.school_zones WHERE school_id = $1", school_id)
            return str(held)


async def _fenced(conn: asyncpg.Connection, attempt: Attempt) -> None:
    """Within the caller's transaction: hold the attempt's row (a newer claim waits for this
    transaction) and go on only if its epoch is still the one ``attempt`` claimed."""
    epoch = await conn.fetchval("SELECT epoch FROM migration.cutovers WHERE attempt_id = $1 FOR UPDATE", attempt.attempt_id)
    if epoch is None or epoch != attempt.epoch or attempt.epoch == 0:
        raise LeaseLost(f"{attempt.school_id}: cutover {attempt.attempt_id} is run under epoch {epoch} now, not {attempt.epoch}")
