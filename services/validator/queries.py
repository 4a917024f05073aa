"""The validator's reads and writes in PostgreSQL.

Every identifier in the SQL built here comes from the fixed table catalogue
(``shared.catalog.tables``) or from PostgreSQL's own catalogue checked against it; every value
is a parameter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.validator.digest import (
    DOMAIN_TABLES,
    domain_checksum_sql,
    record_digests_sql,
)
from services.validator.expected import StoredChange
from shared.catalog.domains import Domain
from shared.catalog.tables import TABLES
from shared.catalog.timezones import AS_WRITTEN
from shared.ledger.versions import SqlVersion, Version
from shared.source import jsonsafe
from shared.wire.messages import AuditSummary, ChangeOp, SnapshotManifest, change_id

ActualRow = tuple[str, dict[str, Any]]  # (table, the row as PostgreSQL returns it)


@dataclass(frozen=True)
class Source:
    manifest: SnapshotManifest
    content: bytes
    backup_ok: bool
    default_ts: datetime | None = None
    """What records without timestamps were given (``migration.snapshots.default_ts``)."""
    aliases: dict[str, Domain] = field(default_factory=dict)
    """The key aliases its release read it with (``AuditSummary.aliased_keys``)."""
    timezone: str = AS_WRITTEN
    """The school's time zone its records were mapped in (``migration.school_zones``)."""


async def load_source(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> Source | None:
    """The verified backup of a snapshot and its manifest (None if there is none)."""
    row = await pool.fetchrow(
        """
        SELECT s.manifest, s.default_ts, s.audit, b.content, b.sha256, coalesce(z.zone, 'as-written') AS zone
          FROM migration.snapshots s
          JOIN migration.backups b USING (school_id, snapshot_id)
          LEFT JOIN migration.school_zones z USING (school_id)
         WHERE s.school_id = $1 AND s.snapshot_id = $2
        """,
        school_id,
        snapshot_id,
    )
    if row is None:
        return None
    content = bytes(row["content"])
    return Source(
        SnapshotManifest.model_validate(row["manifest"]),
        content,
        hashlib.sha256(content).hexdigest() == row["sha256"],
        row["default_ts"],
        AuditSummary.model_validate(row["audit"]).aliased_keys if row["audit"] else {},
        row["zone"],
    )


_AFTER_SNAPSHOT = SqlVersion.of("").newer(SqlVersion.snapshot("$2"))


async def changes_after(pool: asyncpg.Pool, school_id: str, taken_at: datetime, cut: datetime) -> list[StoredChange]:
    """The school's changes with a version after the snapshot's (``shared.ledger.versions``); those
    received at or after ``cut`` are ``late``."""
    rows = await pool.fetch(
        f"""
        SELECT domain, record_id, op, source_ts, client_id, seq, record, received_at >= $3 AS late
          FROM migration.changes
         WHERE school_id = $1 AND {_AFTER_SNAPSHOT}
        """,
        school_id,
        taken_at,
        cut,
    )
    return [
        StoredChange(
            Domain(r["domain"]),
            r["record_id"],
            ChangeOp(r["op"]),
            Version(r["source_ts"], r["client_id"], r["seq"]),
            jsonsafe.load(bytes(r["record"])) if r["record"] is not None else None,
            change_id(r["client_id"], r["seq"]),
            bool(r["late"]),
        )
        for r in rows
    ]


async def domain_checksum(pool: asyncpg.Pool, school_id: str, domain: Domain) -> tuple[str, int]:
    row = await pool.fetchrow(domain_checksum_sql(domain), school_id)
    assert row is not None
    return row["checksum"], row["records"]


async def record_digests(pool: asyncpg.Pool, school_id: str, domain: Domain) -> dict[str, str]:
    rows = await pool.fetch(record_digests_sql(domain), school_id)
    return {r["legacy_id"]: r["digest"] for r in rows}


async def record_rows(pool: asyncpg.Pool, school_id: str, domain: Domain, legacy_ids: list[str]) -> dict[str, list[ActualRow]]:
    """The rows of the given records, as PostgreSQL holds them, parents first."""
    found: dict[str, list[ActualRow]] = {i: [] for i in legacy_ids}
    for table, role in DOMAIN_TABLES[domain]:
        where = "school_id = $1 AND legacy_id = ANY($2::text[]) AND deleted_at IS NULL" + (" AND role = $3" if role else "")
        args: list[Any] = [school_id, legacy_ids] + ([role] if role else [])
        for row in await pool.fetch(f"SELECT * FROM {table} WHERE {where} ORDER BY id", *args):
            found.setdefault(row["legacy_id"], []).append((table, {k: v for k, v in row.items() if k != "deleted_at"}))
    return found


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    parent: str
    parent_column: str


async def foreign_keys(pool: asyncpg.Pool) -> list[ForeignKey]:
    """The single-column foreign keys between catalogue tables, as the database declares them."""
    rows = await pool.fetch(
        """
        SELECT c.conrelid::regclass::text AS t, a.attname AS col, c.confrelid::regclass::text AS p, pa.attname AS pcol
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
          JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = c.confkey[1]
         WHERE c.contype = 'f' AND cardinality(c.conkey) = 1 AND c.connamespace = 'public'::regnamespace
         ORDER BY 1, 2
        """
    )
    return [
        ForeignKey(r["t"], r["col"], r["p"], r["pcol"])
        for r in rows
        if r["t"] in TABLES
        and r["p"] in TABLES
        and r["col"] in TABLES[r["t"]].column_names
        and r["pcol"] in TABLES[r["p"]].column_names
    ]


async def broken_references(pool: asyncpg.Pool, school_id: str, key: ForeignKey) -> list[tuple[str, str]]:
    """(legacy id, missing parent id) of the school's rows whose reference does not resolve.

    The foreign keys make this impossible while they are enforced; it catches rows written
    with them off (``session_replication_role = replica``, a restore, a manual fix).
    """
    rows = await pool.fetch(
        f"SELECT c.legacy_id, c.{key.column}::text AS ref FROM {key.table} c"
        f" WHERE c.school_id = $1 AND c.{key.column} IS NOT NULL"
        f" AND NOT EXISTS (SELECT 1 FROM {key.parent} p WHERE p.{key.parent_column} = c.{key.column})",
        school_id,
    )
    return [(r["legacy_id"], r["ref"]) for r in rows]


async def unique_keys(pool: asyncpg.Pool) -> list[tuple[str, list[str]]]:
    """(table, columns) of every unique key on a catalogue table other than the primary key, as
    the database declares them: unique constraints, and exclusion constraints by equality
    (the live-row keys of migration 015)."""
    rows = await pool.fetch(
        """
        SELECT c.conrelid::regclass::text AS t, array_agg(a.attname ORDER BY k.n) AS cols
          FROM pg_constraint c
          CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k (attnum, n)
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
         WHERE c.contype IN ('u', 'x') AND c.connamespace = 'public'::regnamespace
         GROUP BY c.oid, c.conrelid
        """
    )
    return [
        (r["t"], list(r["cols"])) for r in rows if r["t"] in TABLES and all(c in TABLES[r["t"]].column_names for c in r["cols"])
    ]


async def duplicated_keys(pool: asyncpg.Pool, school_id: str, table: str, columns: list[str]) -> list[list[str]]:
    """The legacy ids of live rows sharing one value of a unique key (none while the
    constraint holds)."""
    cols = ", ".join(columns)
    present = " AND ".join(f"{c} IS NOT NULL" for c in columns)
    rows = await pool.fetch(
        f'SELECT array_agg(legacy_id ORDER BY legacy_id COLLATE "C") AS ids FROM {table}'
        f" WHERE school_id = $1 AND deleted_at IS NULL AND {present} GROUP BY {cols} HAVING count(*) > 1",
        school_id,
    )
    return [list(r["ids"]) for r in rows]


async def name_mismatches(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> list[dict[str, Any]]:
    """Denormalised names that disagree with their referent, as ingest's audit found them."""
    findings = await pool.fetchval(
        "SELECT findings FROM migration.audits WHERE school_id = $1 AND snapshot_id = $2", school_id, snapshot_id
    )
    return [f for f in findings or [] if f.get("type") == "name_mismatch"]
