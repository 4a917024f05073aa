"""Operator look-ups behind ``schoolmig audit`` and ``schoolmig backup``: reads from the
pipeline's PostgreSQL tables, checks, and plain-data results the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from shared.ledger.snapshots import adopted_sql, newest_first_sql, newest_per_school_sql, own_sql
from shared.source.backup_files import verify_backup_file
from shared.wire.chunks import sha256_hex


async def latest_audit(pool: asyncpg.Pool, school_id: str, snapshot_id: str | None = None) -> dict[str, Any] | None:
    """The audit of ``snapshot_id``, or of the school's newest audited snapshot."""
    row = await pool.fetchrow(
        f"""
        SELECT a.snapshot_id, a.summary, a.findings, a.created_at
          FROM migration.audits a JOIN migration.snapshots s USING (school_id, snapshot_id)
         WHERE a.school_id = $1 AND ($2::text IS NULL OR a.snapshot_id = $2) AND ($2::text IS NOT NULL OR {own_sql("s")})
         ORDER BY {newest_first_sql("s")} LIMIT 1
        """,
        school_id,
        snapshot_id,
    )
    return dict(row) if row else None


async def latest_released_snapshots(pool: asyncpg.Pool, school_id: str | None = None) -> dict[str, str]:
    """School id -> its newest released snapshot (one school, or all)."""
    rows = await pool.fetch(newest_per_school_sql(f"{adopted_sql('s')} AND ($1::text IS NULL OR s.school_id = $1)"), school_id)
    return {r["school_id"]: r["snapshot_id"] for r in rows}


@dataclass(frozen=True)
class BackupCheck:
    school_id: str
    snapshot_id: str
    stored_at: str
    size_bytes: int
    database_ok: bool
    file_path: str | None
    file_ok: bool

    @property
    def ok(self) -> bool:
        return self.database_ok and self.file_ok


async def verify_backups(pool: asyncpg.Pool, school_id: str | None = None) -> list[BackupCheck]:
    """Re-hash every stored copy (PostgreSQL and file) against the SHA-256 it was received with."""
    rows = await pool.fetch(
        "SELECT school_id, snapshot_id, sha256, size_bytes, content, file_path, stored_at FROM migration.backups"
        " WHERE $1::text IS NULL OR school_id = $1 ORDER BY school_id, stored_at",
        school_id,
    )
    return [
        BackupCheck(
            school_id=r["school_id"],
            snapshot_id=r["snapshot_id"],
            stored_at=r["stored_at"].isoformat(),
            size_bytes=r["size_bytes"],
            database_ok=sha256_hex(bytes(r["content"])) == r["sha256"],
            file_path=r["file_path"],
            file_ok=bool(r["file_path"]) and verify_backup_file(Path(r["file_path"]), r["sha256"]),
        )
        for r in rows
    ]


async def export_backup(pool: asyncpg.Pool, school_id: str, snapshot_id: str | None, out: Path) -> tuple[str, int]:
    """Write the snapshot's original bytes to ``out``; return (snapshot id, size). The copy is
    checked against its SHA-256 first: a damaged backup is refused, not exported."""
    row = await pool.fetchrow(
        """
        SELECT snapshot_id, sha256, content FROM migration.backups
         WHERE school_id = $1 AND ($2::text IS NULL OR snapshot_id = $2)
         ORDER BY stored_at DESC LIMIT 1
        """,
        school_id,
        snapshot_id,
    )
    if row is None:
        raise LookupError(f"no backup for school {school_id}" + (f" snapshot {snapshot_id}" if snapshot_id else ""))
    content = bytes(row["content"])
    if sha256_hex(content) != row["sha256"]:
        raise ValueError(f"backup of {school_id}/{row['snapshot_id']} does not match its SHA-256")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(content)
    return row["snapshot_id"], len(content)
