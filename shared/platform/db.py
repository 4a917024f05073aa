"""PostgreSQL: the connection pool and the versioned schema migrations.

Migrations are the ``NNN_name.sql`` files beside this module, applied in order, each in
its own transaction and recorded in ``migration.schema_version``. A session-level
advisory lock makes it safe for several replicas to start at once: one applies, the
others wait and then find nothing to do.
"""

from __future__ import annotations

import json
import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

_MIGRATION_LOCK_KEY = 0x5C400_1  # arbitrary, fixed: "schoolmig migrations"


def _jsonb_encode(value: object) -> bytes:
    # Binary jsonb is a version byte (1) then the JSON text; binary works for COPY too.
    return b"\x01" + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _jsonb_decode(data: bytes) -> object:
    return json.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in and out as Python objects, everywhere, including COPY.
    await conn.set_type_codec("jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection)
    assert pool is not None
    return pool


_LOCK_SCHOOLS = """
SELECT count(pg_advisory_xact_lock(k))
  FROM (SELECT DISTINCT hashtextextended('schoolmig.school/' || s, 0) AS k FROM unnest($1::text[]) AS s ORDER BY k) AS keys
"""


async def lock_schools(conn: asyncpg.Connection, school_ids: object) -> None:
    """Hold, until the transaction ends, each school's write lock (always in the same order).

    Whatever decides from one school's parked records and existing rows (the loader's
    parking check and un-parking, the coordinator's orphan sweep) takes it, so two writers
    never judge a school's references from snapshots that miss each other's commits: a
    child parked by one loader while another commits its parent is seen by that commit.
    References never cross schools (every id is derived from its school), so schools do
    not wait for each other.
    """
    await conn.execute(_LOCK_SCHOOLS, sorted(set(school_ids)))  # type: ignore[call-overload]


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in version order."""
    found = []
    for entry in resources.files("shared.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def apply_migrations(dsn: str) -> list[str]:
    """Bring the schema up to date; return the names of the files applied now."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                "CREATE SCHEMA IF NOT EXISTS migration;"
                "CREATE TABLE IF NOT EXISTS migration.schema_version ("
                " version INT PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM migration.schema_version")}
            for version, name, sql in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO migration.schema_version (version, name) VALUES ($1, $2)", version, name)
                applied.append(name)
                log.info("applied schema migration %s", name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied


# PostgreSQL text and jsonb cannot hold NUL (U+0000). What is only shown (ids in reports,
# audit findings, messages) shows it as the visible escape; what must be kept exactly
# (a quarantined payload) is stored as bytes instead (see the writer).
NUL = "\x00"


def pg_text(value: str | None) -> str | None:
    return value.replace(NUL, "\\u0000") if value is not None and NUL in value else value


def pg_json(value: object) -> object:
    """``value`` with every string (keys too) made storable in jsonb."""
    if isinstance(value, str):
        return pg_text(value)
    if isinstance(value, list):
        return [pg_json(v) for v in value]
    if isinstance(value, dict):
        return {pg_text(k): pg_json(v) for k, v in value.items()}
    return value
