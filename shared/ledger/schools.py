"""Each school's phase and history, the operators' commands and the validation runs, as
stored: written by the coordinator and the validator, read by them and by the command line
(which asks the services for everything it changes, and reads here what came of it)."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.wire.messages import ValidationCompleted


async def schools(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every school's phase, snapshot and mode (for ``schoolmig status`` and metrics); the
    scratch schools of ``export --verify`` are not among them."""
    rows = await pool.fetch(
        """
        SELECT p.school_id, p.phase, p.snapshot_id, p.updated_at,
               coalesce(m.mode, 'localStorage') AS mode, coalesce(m.maintenance, false) AS maintenance
          FROM migration.school_phase p LEFT JOIN migration.school_modes m USING (school_id)
         WHERE NOT EXISTS (SELECT 1 FROM migration.scratch_schools s WHERE s.school_id = p.school_id)
         ORDER BY p.school_id
        """
    )
    return [dict(r) for r in rows]


async def phase_of(pool: asyncpg.Pool, school_id: str) -> tuple[str | None, str | None]:
    """The school's phase and the snapshot it is on; (None, None) for a school nobody knows."""
    row = await pool.fetchrow("SELECT phase, snapshot_id FROM migration.school_phase WHERE school_id = $1", school_id)
    return (row["phase"], row["snapshot_id"]) if row else (None, None)


async def transitions(pool: asyncpg.Pool, school_id: str) -> list[dict[str, Any]]:
    """The school's phase moves, oldest first, with who and why."""
    rows = await pool.fetch(
        "SELECT from_phase, to_phase, actor, reason, at FROM migration.phase_transitions WHERE school_id = $1 ORDER BY id",
        school_id,
    )
    return [dict(r) for r in rows]


async def mark_scratch(pool: asyncpg.Pool, school_id: str, export_id: str, of_school: str) -> None:
    """``school_id`` is a scratch school of an export's verification, not a school of its own."""
    await pool.execute(
        "INSERT INTO migration.scratch_schools (school_id, export_id, of_school) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        school_id,
        export_id,
        of_school,
    )


async def history(pool: asyncpg.Pool, school_id: str) -> list[dict[str, Any]]:
    """Everything that happened to a school, oldest first: its phase moves, the operators'
    commands with who, why and what came of them, and its exports (with their verification)."""
    rows = await pool.fetch(
        """
        SELECT at, 'phase' AS kind, actor, coalesce(from_phase, '-') || ' -> ' || to_phase AS what,
               reason, NULL AS outcome
          FROM migration.phase_transitions WHERE school_id = $1
        UNION ALL
        SELECT handled_at, 'command', actor, action, reason, outcome
          FROM migration.operator_commands WHERE school_id = $1
        UNION ALL
        SELECT created_at, 'export', actor, format || ' ' || export_id, NULL,
               CASE WHEN verified_at IS NULL THEN 'not verified' ELSE 'verified as ' || verified_with END
          FROM migration.exports WHERE school_id = $1
        UNION ALL
        SELECT cleared_at, 'device', client_id, 'local copy archived and cleared', NULL,
               archived_records || ' record(s) archived on the device, sha256 ' || archive_sha256
          FROM migration.local_cleanups WHERE school_id = $1
        ORDER BY 1
        """,
        school_id,
    )
    return [dict(r) for r in rows]


async def audit_block(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[str, Any] | None:
    """The critical audit findings holding a snapshot at the audit gate (None: not held)."""
    event = await pool.fetchval(
        "SELECT event FROM migration.blocked_snapshots WHERE school_id = $1 AND snapshot_id = $2", school_id, snapshot_id
    )
    if event is None:
        return None
    audit = event.get("audit") or {}
    return {"critical": int(audit.get("critical_findings") or 0), "unmapped_keys": sorted(audit.get("unmapped_keys") or {})}


async def last_validation_ok(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> bool | None:
    """Whether the pipeline's last finished validation of the snapshot passed (operators' own
    ``schoolmig validate`` runs aside); None before any."""
    return await pool.fetchval(
        """
        SELECT ok FROM migration.validation_runs
         WHERE school_id = $1 AND snapshot_id = $2 AND finished_at IS NOT NULL AND run_id NOT LIKE 'op-%'
         ORDER BY finished_at DESC LIMIT 1
        """,
        school_id,
        snapshot_id,
    )


async def local_copies(pool: asyncpg.Pool, school_id: str) -> dict[str, Any]:
    """Whether the school's clients are told now to clear their local copy (its cutover stood
    the grace period), which devices did for this announcement (archived and cleared) and
    which still hold data: every device its snapshots or changes came from that has not said
    so. Files published by hand (the unnamed device) are no device that keeps a copy: left out."""
    asked = await pool.fetchval("SELECT updated_at FROM migration.school_modes WHERE school_id = $1 AND clear_local", school_id)
    rows = await pool.fetch(
        """
        SELECT d.device_id, c.cleared_at FROM (
            SELECT device_id FROM migration.device_states WHERE school_id = $1
            UNION SELECT client_id FROM migration.changes WHERE school_id = $1
        ) d (device_id)
        LEFT JOIN migration.local_cleanups c ON c.school_id = $1 AND c.client_id = d.device_id AND c.announced_at = $2
        WHERE d.device_id <> ''
        ORDER BY d.device_id
        """,
        school_id,
        asked,
    )
    return {
        "told_to_clear": asked is not None,
        "cleared": [r["device_id"] for r in rows if r["cleared_at"] is not None],
        "holding": [r["device_id"] for r in rows if r["cleared_at"] is None],
    }


REFUSED = "refused"


def is_refusal(outcome: str | None) -> bool:
    """Whether the coordinator's answer to a command says it did not act (the one rule)."""
    return (outcome or "").startswith(REFUSED)


async def command_outcome(pool: asyncpg.Pool, command_id: str) -> str | None:
    """What the coordinator made of an operator's command; None until it acted on it."""
    return await pool.fetchval("SELECT outcome FROM migration.operator_commands WHERE command_id = $1", command_id)


async def request_run(pool: asyncpg.Pool, run_id: str, school_id: str, snapshot_id: str) -> None:
    """A validation run, shown as requested until its result is stored."""
    await pool.execute(
        "INSERT INTO migration.validation_runs (run_id, school_id, snapshot_id) VALUES ($1, $2, $3) ON CONFLICT (run_id) DO NOTHING",
        run_id,
        school_id,
        snapshot_id,
    )


async def store_validation(pool: asyncpg.Pool, result: ValidationCompleted) -> None:
    """A validation run's result, with the differing values (the database may hold them)."""
    await pool.execute(
        """
        INSERT INTO migration.validation_runs (run_id, school_id, snapshot_id, ok, result, requested_at, finished_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (run_id) DO UPDATE SET ok = EXCLUDED.ok, result = EXCLUDED.result, finished_at = EXCLUDED.finished_at
         WHERE (validation_runs.school_id, validation_runs.snapshot_id) = (EXCLUDED.school_id, EXCLUDED.snapshot_id)
        """,
        result.run_id,
        result.school_id,
        result.snapshot_id,
        result.ok,
        result.model_dump(mode="json"),
        result.started_at,
        result.finished_at,
    )


async def validation(pool: asyncpg.Pool, run_id: str) -> ValidationCompleted | None:
    """A finished validation run's result; None while it runs (or was never asked for)."""
    result = await pool.fetchval(
        "SELECT result FROM migration.validation_runs WHERE run_id = $1 AND finished_at IS NOT NULL", run_id
    )
    return None if result is None else ValidationCompleted.model_validate(result)


async def latest_passing(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[str, int] | None:
    """Valid records per domain of the school's latest passing validation of a snapshot."""
    result = await pool.fetchval(
        "SELECT result FROM migration.validation_runs WHERE school_id = $1 AND snapshot_id = $2 AND ok"
        " ORDER BY finished_at DESC NULLS LAST LIMIT 1",
        school_id,
        snapshot_id,
    )
    return {d["domain"]: int(d["valid_records"]) for d in result["domains"]} if result else None
