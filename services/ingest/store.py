"""Ingest's PostgreSQL I/O: manifests, chunks, the verified backup, release marks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.ingest.changes import change_digest, record_bytes
from shared.catalog.domains import Domain
from shared.catalog.timezones import SchoolZone, ZoneSource, choose
from shared.ledger import device_store
from shared.ledger.device_store import Derived, knows_device
from shared.ledger.devices import Ref
from shared.ledger.snapshots import adopted_sql, later_sql, newest_first_sql, rank_sql
from shared.platform.db import pg_json
from shared.platform.outbox import Outbound, enqueue
from shared.source import jsonsafe
from shared.wire.chunks import sha256_hex
from shared.wire.messages import (
    MAX_CHANGES_PER_MESSAGE,
    AuditSummary,
    Change,
    ChangeBatch,
    LocalCleared,
    Mode,
    SnapshotChunk,
    SnapshotManifest,
)


@dataclass(frozen=True)
class ReleaseState:
    manifest: SnapshotManifest | None
    chunks_received: int
    released: bool


class IngestStore:
    def __init__(self, pool: asyncpg.Pool, outbox: str = "ingest") -> None:
        self.pool = pool
        self.outbox = outbox  # the outbox rows this service writes and drains (its topic prefix and name)

    async def save_manifest(self, manifest: SnapshotManifest) -> None:
        await self.pool.execute(
            """
            INSERT INTO migration.snapshots
              (school_id, snapshot_id, format, taken_at, size_bytes, sha256, chunk_count, manifest, device_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (school_id, snapshot_id) DO NOTHING
            """,
            manifest.school_id,
            manifest.snapshot_id,
            manifest.format.value,
            manifest.taken_at,
            manifest.size_bytes,
            manifest.sha256,
            manifest.chunk_count,
            manifest.model_dump(mode="json"),
            manifest.device_id,
        )

    async def save_chunk(self, chunk: SnapshotChunk, data: bytes, sha256: str) -> None:
        """Keep a candidate for the chunk's index (by its hash, ``sha256`` of ``data``: the
        manifest says which one is right)."""
        await self.pool.execute(
            """
            INSERT INTO migration.snapshot_chunks (school_id, snapshot_id, idx, data, sha256)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
            """,
            chunk.school_id,
            chunk.snapshot_id,
            chunk.index,
            data,
            sha256,
        )

    async def release_state(self, school_id: str, snapshot_id: str) -> ReleaseState:
        row = await self.pool.fetchrow(
            """
            SELECT s.manifest, s.released_at IS NOT NULL AS released,
                   (SELECT count(DISTINCT c.idx) FROM migration.snapshot_chunks c
                     WHERE c.school_id = $1 AND c.snapshot_id = $2
                       AND c.sha256 = s.manifest->'chunk_sha256'->>c.idx) AS chunks
              FROM (SELECT 1) one
              LEFT JOIN migration.snapshots s ON s.school_id = $1 AND s.snapshot_id = $2
            """,
            school_id,
            snapshot_id,
        )
        assert row is not None
        manifest = SnapshotManifest.model_validate(row["manifest"]) if row["manifest"] else None
        return ReleaseState(manifest, int(row["chunks"]), bool(row["released"]))

    async def chunks(self, school_id: str, snapshot_id: str) -> list[bytes]:
        """Per index, the candidate whose hash the manifest names, in order."""
        rows = await self.pool.fetch(
            """
            SELECT DISTINCT ON (c.idx) c.data
              FROM migration.snapshot_chunks c
              JOIN migration.snapshots s USING (school_id, snapshot_id)
             WHERE c.school_id = $1 AND c.snapshot_id = $2 AND c.sha256 = s.manifest->'chunk_sha256'->>c.idx
             ORDER BY c.idx
            """,
            school_id,
            snapshot_id,
        )
        return [bytes(r["data"]) for r in rows]

    async def save_backup(self, manifest: SnapshotManifest, content: bytes, file_path: str) -> bool:
        """Store the file exactly as received and read it back: True when the copy verifies."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO migration.backups (school_id, snapshot_id, sha256, size_bytes, content, file_path)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (school_id, snapshot_id) DO UPDATE SET file_path = EXCLUDED.file_path
                """,
                manifest.school_id,
                manifest.snapshot_id,
                manifest.sha256,
                len(content),
                content,
                file_path,
            )
            stored = await conn.fetchval(
                "SELECT content FROM migration.backups WHERE school_id = $1 AND snapshot_id = $2",
                manifest.school_id,
                manifest.snapshot_id,
            )
        return stored is not None and sha256_hex(bytes(stored)) == manifest.sha256

    async def save_audit(self, manifest: SnapshotManifest, summary: AuditSummary, findings: list[dict[str, Any]]) -> None:
        await self.pool.execute(
            """
            INSERT INTO migration.audits (school_id, snapshot_id, summary, findings) VALUES ($1, $2, $3, $4)
            ON CONFLICT (school_id, snapshot_id) DO UPDATE SET summary = EXCLUDED.summary, findings = EXCLUDED.findings
            """,
            manifest.school_id,
            manifest.snapshot_id,
            pg_json(summary.model_dump(mode="json")),
            pg_json(findings),
        )

    async def overdue(self, older_than_s: float) -> list[tuple[str, str, int | None, list[int], float]]:
        """Snapshots (or chunk groups with no manifest) unreleased for too long and not yet
        reported: (school, snapshot, chunks expected or None, missing chunk indexes, age in s)."""
        rows = await self.pool.fetch(
            """
            WITH parts AS (  -- a wrong candidate is not a chunk received
              SELECT c.school_id, c.snapshot_id, array_agg(DISTINCT c.idx) AS got, min(c.received_at) AS first_at
                FROM migration.snapshot_chunks c
                LEFT JOIN migration.snapshots m ON m.school_id = c.school_id AND m.snapshot_id = c.snapshot_id
               WHERE m.manifest IS NULL OR c.sha256 = m.manifest->'chunk_sha256'->>c.idx
               GROUP BY c.school_id, c.snapshot_id),
            pending AS (
              SELECT coalesce(s.school_id, p.school_id) AS school_id, coalesce(s.snapshot_id, p.snapshot_id) AS snapshot_id,
                     s.chunk_count, coalesce(p.got, '{}') AS got,
                     least(s.received_at, p.first_at) AS first_at, s.released_at
                FROM migration.snapshots s FULL JOIN parts p USING (school_id, snapshot_id))
            SELECT school_id, snapshot_id, chunk_count, got, extract(epoch FROM now() - first_at) AS age
              FROM pending
             WHERE released_at IS NULL AND first_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM migration.incomplete_snapshots i
                                WHERE i.school_id = pending.school_id AND i.snapshot_id = pending.snapshot_id)
               AND NOT EXISTS (SELECT 1 FROM migration.refused_snapshots f  -- answered already, with its reason
                                WHERE f.school_id = pending.school_id AND f.snapshot_id = pending.snapshot_id)
            """,
            older_than_s,
        )
        result = []
        for r in rows:
            expected = r["chunk_count"]
            missing = sorted(set(range(expected)) - set(r["got"])) if expected is not None else []
            result.append((r["school_id"], r["snapshot_id"], expected, missing, float(r["age"])))
        return result

    async def default_ts(self, school_id: str, snapshot_id: str, taken_at: datetime) -> datetime:
        """The time this snapshot gives records without timestamps: the school's
        (:meth:`school_default_ts`, this snapshot's own time if it is the first thing of the
        school), kept with the snapshot for the validator."""
        value = await self.school_default_ts(school_id, taken_at)
        await self.pool.execute(
            "UPDATE migration.snapshots SET default_ts = $3 WHERE school_id = $1 AND snapshot_id = $2",
            school_id,
            snapshot_id,
            value,
        )
        return value

    async def newer_released(self, school_id: str, snapshot_id: str, taken_at: datetime) -> str | None:
        """A released snapshot of the same device read after this one, if any (a re-drive of
        this one is then pointless: its device's later reading took its place). Two read at
        the same instant are ordered by their ids, so one of them is the newest."""
        return await self.pool.fetchval(
            f"""
            SELECT n.snapshot_id FROM migration.snapshots n
              JOIN migration.snapshots me ON me.school_id = n.school_id AND me.snapshot_id = $2
             WHERE n.school_id = $1 AND n.snapshot_id <> $2 AND n.device_id = me.device_id AND {adopted_sql("n")}
               AND {later_sql(rank_sql("n"), rank_sql("", "$3", "$2"))}
             ORDER BY {newest_first_sql("n")} LIMIT 1
            """,
            school_id,
            snapshot_id,
            taken_at,
        )

    async def derive(
        self, manifest: SnapshotManifest, held: dict[Ref, str], readable: frozenset[str], *, as_released: bool = False
    ) -> Derived:
        """Its records' versions from its device's history, derived and stored once
        (``shared.ledger.device_store``)."""
        return await device_store.derive_snapshot(
            self.pool,
            school_id=manifest.school_id,
            device_id=manifest.device_id,
            snapshot_id=manifest.snapshot_id,
            taken_at=manifest.taken_at,
            held=held,
            readable=readable,
            as_released=as_released,
        )

    async def underived_history(self, school_id: str, before: str) -> list[str]:
        return await device_store.underived_history(self.pool, school_id, before)

    async def has_history(self, school_id: str, device_id: str) -> bool:
        return await device_store.has_history(self.pool, school_id, device_id)

    async def extend_derivation(self, manifest: SnapshotManifest, held: dict[Ref, str]) -> Derived | None:
        """Its derivation with the records a mapped key adds (``shared.ledger.device_store``)."""
        return await device_store.extend_derivation(
            self.pool,
            school_id=manifest.school_id,
            device_id=manifest.device_id,
            snapshot_id=manifest.snapshot_id,
            taken_at=manifest.taken_at,
            held=held,
        )

    async def derivation_of(self, school_id: str, snapshot_id: str) -> Derived | None:
        return await device_store.derivation_of(self.pool, school_id, snapshot_id)

    async def unchanged_of(self, manifest: SnapshotManifest) -> str | None:
        """The latest snapshot its device had fanned out, if this one is byte for byte the same
        file: then it is that snapshot again (nothing new to migrate), whatever its read time.
        Identical to an older one only (a revert A → B → A) it is a new snapshot."""
        row = await self.pool.fetchrow(
            f"""
            SELECT s.snapshot_id, s.sha256 FROM migration.snapshots s
             WHERE s.school_id = $1 AND s.device_id = $2 AND s.snapshot_id <> $3 AND {adopted_sql("s")}
               AND NOT EXISTS (SELECT 1 FROM migration.superseded_snapshots x
                                WHERE (x.school_id, x.snapshot_id) = (s.school_id, s.snapshot_id))
             ORDER BY {newest_first_sql("s")} LIMIT 1
            """,
            manifest.school_id,
            manifest.device_id,
            manifest.snapshot_id,
        )
        return row["snapshot_id"] if row is not None and row["sha256"] == manifest.sha256 else None

    async def note_superseded(self, school_id: str, snapshot_id: str, by: str) -> None:
        await self.pool.execute(
            "INSERT INTO migration.superseded_snapshots (school_id, snapshot_id, superseded_by) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            school_id,
            snapshot_id,
            by,
        )

    async def note_unchanged(self, school_id: str, snapshot_id: str, twin: str) -> None:
        await self.pool.execute(
            "UPDATE migration.snapshots SET unchanged_of = $3 WHERE school_id = $1 AND snapshot_id = $2",
            school_id,
            snapshot_id,
            twin,
        )

    async def mark_incomplete(self, school_id: str, snapshot_id: str, missing: list[int]) -> None:
        await self.pool.execute(
            "INSERT INTO migration.incomplete_snapshots (school_id, snapshot_id, missing_chunks) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            school_id,
            snapshot_id,
            missing,
        )

    async def mark_released(self, manifest: SnapshotManifest, audit: AuditSummary, events: list[Outbound]) -> None:
        """Released (its chunks dropped), and the events that say so written, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
            WITH released AS (
              UPDATE migration.snapshots SET released_at = now(), audit = $3
               WHERE school_id = $1 AND snapshot_id = $2),
            completed AS (  -- a late chunk completed it: no longer incomplete
              DELETE FROM migration.incomplete_snapshots WHERE school_id = $1 AND snapshot_id = $2)
            DELETE FROM migration.snapshot_chunks WHERE school_id = $1 AND snapshot_id = $2
            """,
                manifest.school_id,
                manifest.snapshot_id,
                pg_json(audit.model_dump(mode="json")),
            )
            await enqueue(conn, events, self.outbox)

    async def enqueue(self, events: list[Outbound]) -> None:
        """Events to publish, written on their own (published by the next drain)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await enqueue(conn, events, self.outbox)

    async def reaudit(self, manifest: SnapshotManifest, audit: AuditSummary) -> None:
        """A released snapshot's audit, again (an operator mapped keys): what its counts read."""
        await self.pool.execute(
            "UPDATE migration.snapshots SET audit = $3 WHERE school_id = $1 AND snapshot_id = $2 AND released_at IS NOT NULL",
            manifest.school_id,
            manifest.snapshot_id,
            pg_json(audit.model_dump(mode="json")),
        )

    async def save_changes(self, batch: ChangeBatch, accepted: list[tuple[int, Change]]) -> set[int]:
        """Keep the accepted changes of the message (a redelivered one is already there); return
        the positions of those whose (client, seq) already names a *different* change."""
        if not accepted:
            return set()
        positions = [i for i, _ in accepted]
        changes = [c for _, c in accepted]
        digests = [change_digest(c) for c in changes]
        rows = await self.pool.fetch(
            """
            WITH incoming AS (
              SELECT * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::bytea[],
                                   $9::text[], $10::int[]) AS c (seq, domain, record_id, op, source_ts, record, digest, pos)),
            saved AS (
              INSERT INTO migration.changes (school_id, client_id, seq, domain, record_id, op, source_ts, record, digest)
              SELECT $1, $2, seq, domain, record_id, op, source_ts, record, digest FROM incoming
              ON CONFLICT (school_id, client_id, seq) DO NOTHING)
            SELECT i.pos FROM incoming i JOIN migration.changes c
              ON c.school_id = $1 AND c.client_id = $2 AND c.seq = i.seq
             WHERE c.digest <> i.digest
            """,
            batch.school_id,
            batch.client_id,
            [c.seq for c in changes],
            [c.domain.value for c in changes],
            [c.record_id for c in changes],
            [c.op.value for c in changes],
            [c.source_ts for c in changes],
            [record_bytes(c) for c in changes],
            digests,
            positions,
        )
        return {r["pos"] for r in rows}

    async def backup_of(
        self, school_id: str, snapshot_id: str
    ) -> tuple[SnapshotManifest, bytes, datetime | None, dict[str, Domain]] | None:
        """A released snapshot's manifest, verified backup, default time and the key aliases its
        release read it with (None: none such)."""
        row = await self.pool.fetchrow(
            """
            SELECT s.manifest, s.default_ts, s.audit, b.content, b.sha256 FROM migration.snapshots s
              JOIN migration.backups b USING (school_id, snapshot_id)
             WHERE s.school_id = $1 AND s.snapshot_id = $2 AND s.released_at IS NOT NULL
            """,
            school_id,
            snapshot_id,
        )
        if row is None or sha256_hex(bytes(row["content"])) != row["sha256"]:
            return None
        aliases = AuditSummary.model_validate(row["audit"]).aliased_keys if row["audit"] else {}
        return SnapshotManifest.model_validate(row["manifest"]), bytes(row["content"]), row["default_ts"], aliases

    async def stored_changes(self, school_id: str, per_message: int = MAX_CHANGES_PER_MESSAGE) -> list[ChangeBatch]:
        """Every change kept for the school, as messages per client (for a re-drive)."""
        rows = await self.pool.fetch(
            "SELECT client_id, seq, domain, record_id, op, source_ts, record FROM migration.changes WHERE school_id = $1"
            " ORDER BY client_id, seq",
            school_id,
        )
        by_client: dict[str, list[Change]] = {}
        for r in rows:
            by_client.setdefault(r["client_id"], []).append(
                Change(
                    op=r["op"],
                    domain=r["domain"],
                    record_id=r["record_id"],
                    source_ts=r["source_ts"],
                    seq=r["seq"],
                    record=jsonsafe.load(bytes(r["record"])) if r["record"] is not None else None,
                )
            )
        return [
            ChangeBatch(school_id=school_id, client_id=client, changes=changes[i : i + per_message])
            for client, changes in by_client.items()
            for i in range(0, len(changes), per_message)
        ]

    async def school_default_ts(self, school_id: str, candidate: datetime) -> datetime:
        """The time every record of the school without timestamps is given, whichever write
        brings it first (snapshot or change): fixed at the first ask (``candidate``, the time of
        what asks), the same for every replica. By arrival, not by time: a late, older snapshot
        must not move it (the rows already written keep their ``created_at``)."""
        value = await self.pool.fetchval(
            """
            WITH new AS (INSERT INTO migration.school_defaults (school_id, default_ts) VALUES ($1, $2)
                         ON CONFLICT (school_id) DO NOTHING RETURNING default_ts)
            SELECT default_ts FROM new UNION ALL SELECT default_ts FROM migration.school_defaults WHERE school_id = $1
            """,
            school_id,
            candidate,
        )
        if value is None:  # another replica's insert committed after this statement began: read it now
            value = await self.pool.fetchval("SELECT default_ts FROM migration.school_defaults WHERE school_id = $1", school_id)
        assert value is not None
        return value

    async def school_zone(self, school_id: str, reported: str | None, device_id: str, default: str) -> SchoolZone:
        """The school's one time zone (``shared.catalog.timezones``), fixed from the first write mapped
        on: an operator's if one was set, else ``reported`` (by ``device_id``), else ``default``.
        By arrival, like :meth:`school_default_ts`: one statement, the same for every replica;
        a school's row is written once (the first time) and read after. What ``device_id``
        reports is kept for the audit's notes (written when it changes)."""
        if reported is not None:
            await self.pool.execute(
                """
                INSERT INTO migration.device_zones AS d (school_id, device_id, zone) VALUES ($1, $2, $3)
                ON CONFLICT (school_id, device_id) DO UPDATE SET zone = EXCLUDED.zone, reported_at = now()
                 WHERE d.zone <> EXCLUDED.zone
                """,
                school_id,
                device_id,
                reported,
            )
        row = await self.pool.fetchrow(
            "SELECT zone, source, reported_by FROM migration.school_zones WHERE school_id = $1 AND pinned_at IS NOT NULL",
            school_id,
        )
        if row is None:
            candidate = choose(None, reported, device_id if reported is not None else None, default)
            row = await self.pool.fetchrow(
                """
                INSERT INTO migration.school_zones AS z (school_id, zone, source, reported_by, pinned_at)
                VALUES ($1, $2, $3, $4, now())
                ON CONFLICT (school_id) DO UPDATE SET pinned_at = coalesce(z.pinned_at, now())
                RETURNING zone, source, reported_by
                """,
                school_id,
                candidate.name,
                candidate.source.value,
                candidate.reported_by,
            )
        assert row is not None
        return SchoolZone(row["zone"], ZoneSource(row["source"]), row["reported_by"])

    async def device_zones(self, school_id: str) -> dict[str, str]:
        """The zone each of the school's devices last reported."""
        rows = await self.pool.fetch("SELECT device_id, zone FROM migration.device_zones WHERE school_id = $1", school_id)
        return {r["device_id"]: r["zone"] for r in rows}

    async def local_cleared(self, cleared: LocalCleared) -> str | None:
        """A device archived and cleared its local copy, answering the school's current
        ``clear_local`` announcement: kept, the first report of each device for it (a
        redelivery, or a second report, changes nothing). Not kept, with why: when the school's
        mode does not ask its clients to now, or the report answers an earlier announcement
        (``not_asked``), or the device is none the school's snapshots or changes came from
        (``unknown_device``)."""
        async with self.pool.acquire() as conn, conn.transaction():
            asked = await conn.fetchval(
                "SELECT updated_at FROM migration.school_modes WHERE school_id = $1 AND clear_local", cleared.school_id
            )
            if asked is None or asked != cleared.announced_at:
                return "not_asked"
            if not await knows_device(conn, cleared.school_id, cleared.client_id):
                return "unknown_device"
            await conn.execute(
                """
                INSERT INTO migration.local_cleanups
                  (school_id, client_id, announced_at, cleared_at, archived_records, archive_sha256)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (school_id, client_id, announced_at) DO NOTHING
                """,
                cleared.school_id,
                cleared.client_id,
                cleared.announced_at,
                cleared.cleared_at,
                cleared.archived_records,
                cleared.archive_sha256,
            )
        return None

    async def mode_of(self, school_id: str) -> tuple[Mode | None, bool]:
        row = await self.pool.fetchrow("SELECT mode, maintenance FROM migration.school_modes WHERE school_id = $1", school_id)
        return (Mode(row["mode"]), row["maintenance"]) if row else (None, False)

    async def settled(self, school_id: str, snapshot_id: str) -> str | None:
        """``released`` (taken once already), ``refused`` (at its manifest), or None."""
        return await self.pool.fetchval(
            """
            SELECT CASE WHEN EXISTS (SELECT 1 FROM migration.snapshots
                                      WHERE school_id = $1 AND snapshot_id = $2 AND released_at IS NOT NULL) THEN 'released'
                        WHEN EXISTS (SELECT 1 FROM migration.refused_snapshots
                                      WHERE school_id = $1 AND snapshot_id = $2) THEN 'refused' END
            """,
            school_id,
            snapshot_id,
        )

    async def refuse(self, school_id: str, snapshot_id: str, reason: str) -> None:
        """Mark a snapshot refused at its manifest and drop whatever of it is stored."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO migration.refused_snapshots (school_id, snapshot_id, reason) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                school_id,
                snapshot_id,
                reason,
            )
            await conn.execute(
                "DELETE FROM migration.snapshot_chunks WHERE school_id = $1 AND snapshot_id = $2", school_id, snapshot_id
            )

    async def stored_bytes(
        self, school_id: str, snapshot_id: str, but: int, sha256: str
    ) -> tuple[int | None, int, str | None, int]:
        """What a chunk arriving for index ``but`` (with this hash) is judged by: (the manifest's
        size_bytes, or None before it came; bytes stored for the other indexes, the largest
        candidate of each, and once the manifest is here only the right ones; the hash the
        manifest names for ``but``; how many other candidates ``but`` already has)."""
        row = await self.pool.fetchrow(
            """
            SELECT s.size_bytes AS announced, s.manifest->'chunk_sha256'->>$3::int AS expected,
                   (SELECT coalesce(sum(largest), 0) FROM (
                      SELECT max(length(c.data)) AS largest FROM migration.snapshot_chunks c
                       WHERE c.school_id = $1 AND c.snapshot_id = $2 AND c.idx <> $3
                         AND (s.manifest IS NULL OR c.sha256 = s.manifest->'chunk_sha256'->>c.idx)
                       GROUP BY c.idx) per_index) AS stored,
                   (SELECT count(*) FROM migration.snapshot_chunks c
                     WHERE c.school_id = $1 AND c.snapshot_id = $2 AND c.idx = $3 AND c.sha256 <> $4) AS rivals
              FROM (SELECT 1) one
              LEFT JOIN migration.snapshots s ON s.school_id = $1 AND s.snapshot_id = $2
            """,
            school_id,
            snapshot_id,
            but,
            sha256,
        )
        return row["announced"], int(row["stored"]), row["expected"], int(row["rivals"])

    async def unrefuse(self, school_id: str, snapshot_id: str) -> None:
        await self.pool.execute(
            "DELETE FROM migration.refused_snapshots WHERE school_id = $1 AND snapshot_id = $2", school_id, snapshot_id
        )
