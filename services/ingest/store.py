"""Ingest's PostgreSQL I/O: manifests, chunks, the verified backup, release marks."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shared.chunks import sha256_hex
from shared.messages import AuditSummary, SnapshotChunk, SnapshotManifest


@dataclass(frozen=True)
class ReleaseState:
    manifest: SnapshotManifest | None
    chunks_received: int
    released: bool


class IngestStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save_manifest(self, manifest: SnapshotManifest) -> None:
        await self.pool.execute(
            """
            INSERT INTO migration.snapshots
              (school_id, snapshot_id, format, taken_at, size_bytes, sha256, chunk_count, manifest)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (school_id, snapshot_id) DO NOTHING
            """,
            manifest.school_id, manifest.snapshot_id, manifest.format.value, manifest.taken_at,
            manifest.size_bytes, manifest.sha256, manifest.chunk_count, manifest.model_dump(mode="json"),
        )  # fmt: skip

    async def save_chunk(self, chunk: SnapshotChunk, data: bytes) -> None:
        await self.pool.execute(
            """
            INSERT INTO migration.snapshot_chunks (school_id, snapshot_id, idx, data)
            VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
            """,
            chunk.school_id, chunk.snapshot_id, chunk.index, data,
        )  # fmt: skip

    async def release_state(self, school_id: str, snapshot_id: str) -> ReleaseState:
        row = await self.pool.fetchrow(
            """
            SELECT s.manifest, s.released_at IS NOT NULL AS released,
                   (SELECT count(*) FROM migration.snapshot_chunks c
                     WHERE c.school_id = $1 AND c.snapshot_id = $2) AS chunks
              FROM (SELECT 1) one
              LEFT JOIN migration.snapshots s ON s.school_id = $1 AND s.snapshot_id = $2
            """,
            school_id, snapshot_id,
        )  # fmt: skip
        assert row is not None
        manifest = SnapshotManifest.model_validate(row["manifest"]) if row["manifest"] else None
        return ReleaseState(manifest, int(row["chunks"]), bool(row["released"]))

    async def chunks(self, school_id: str, snapshot_id: str) -> list[bytes]:
        rows = await self.pool.fetch(
            "SELECT data FROM migration.snapshot_chunks WHERE school_id = $1 AND snapshot_id = $2 ORDER BY idx",
            school_id, snapshot_id,
        )  # fmt: skip
        return [bytes(r["data"]) for r in rows]

    async def save_backup(self, manifest: SnapshotManifest, content: bytes) -> bool:
        """Store the file exactly as received and read it back: True when the copy verifies."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO migration.backups (school_id, snapshot_id, sha256, size_bytes, content)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT (school_id, snapshot_id) DO NOTHING
                """,
                manifest.school_id, manifest.snapshot_id, manifest.sha256, len(content), content,
            )  # fmt: skip
            stored = await conn.fetchval(
                "SELECT content FROM migration.backups WHERE school_id = $1 AND snapshot_id = $2",
                manifest.school_id, manifest.snapshot_id,
            )  # fmt: skip
        return stored is not None and sha256_hex(bytes(stored)) == manifest.sha256

    async def mark_released(self, manifest: SnapshotManifest, audit: AuditSummary) -> None:
        await self.pool.execute(
            """
            UPDATE migration.snapshots SET released_at = now(), audit = $3
             WHERE school_id = $1 AND snapshot_id = $2
            """,
            manifest.school_id, manifest.snapshot_id, audit.model_dump(mode="json"),
        )  # fmt: skip
