"""Which target rows are live: their ``deleted_at``, and the live rows holding unique values.

A row is live while ``deleted_at`` is NULL (migration 015). It stops being live when its
record is deleted (:func:`bury`, at the deletion's time) or when a newer write of its record
no longer has it (:func:`drop_children`, at that write's time: a session without one
student's entry, a class without a slot, a lesson without a payment); a write that has the
row again makes it live again (the loader's upsert). Rows are never removed. Every function
runs inside its caller's transaction, under the school's write lock (``shared.platform.db``) and
:data:`AS_MIGRATION`, and
returns the rows that stopped being live, so that writes waiting for their unique values
(``shared.ledger.uniques``) are tried again. Table names come from the fixed catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from shared.catalog.domains import Domain
from shared.catalog.tables import CHILD_TABLES, DOMAIN_TABLES, TABLES, UNIQUE_KEYS, domain_of_row
from shared.ledger.keys import RecordKey, Ref
from shared.ledger.uniques import Claim, Held
from shared.wire.messages import MappedRecord

#: Marks a transaction as the migration's: the ``updated_at`` and obligation-status triggers
#: keep the source's values (migration 005) when a row is written or stops being live.
AS_MIGRATION = "SET LOCAL schoolmig.loading = 'on'"


def _record_rows(table: str, only: str | None) -> str:
    role = f" AND t.role = '{only}'" if only is not None else ""  # a constant of the catalogue
    return f"(t.school_id, t.legacy_id) = (k.s, k.l){role}"


_BURY = {
    (domain, table): f"""
UPDATE {table} t SET deleted_at = k.ts
  FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS k (s, l, ts)
 WHERE {_record_rows(table, only)} AND t.deleted_at IS NULL
RETURNING t.id::text"""
    for domain, tables in DOMAIN_TABLES.items()
    for table, only in tables
}
# The rows of a record its write (at k.ts) does not have: not newer than it (a redelivered
# older write drops nothing of a newer one's).
_DROP = {
    table: f"""
UPDATE {table} t SET deleted_at = k.ts
  FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS k (s, l, ts)
 WHERE (t.school_id, t.legacy_id) = (k.s, k.l) AND t.deleted_at IS NULL AND t.source_ts <= k.ts
   AND NOT (t.id = ANY($4::uuid[]))
RETURNING t.id::text"""
    for tables in CHILD_TABLES.values()
    for table in tables
}


async def bury(conn: asyncpg.Connection, deleted: Iterable[tuple[RecordKey, datetime]]) -> list[Ref]:
    """The live rows of these deleted records (each with its deletion's time) stop being live."""
    by_domain: dict[Domain, list[tuple[str, str, datetime]]] = {}
    for (school, domain, legacy), at in deleted:
        by_domain.setdefault(Domain(domain), []).append((school, legacy, at))
    gone: list[Ref] = []
    for domain, rows in sorted(by_domain.items()):
        args = [list(column) for column in zip(*rows, strict=True)]
        for table, _ in DOMAIN_TABLES[domain]:
            gone += [(table, r[0]) for r in await conn.fetch(_BURY[(domain, table)], *args)]
    return gone


async def drop_children(conn: asyncpg.Connection, writing: Sequence[MappedRecord]) -> list[Ref]:
    """Child rows (``shared.catalog.tables.CHILD_TABLES``) of these records that their write (about to
    be written, in the same transaction) does not have stop being live, at the write's time."""
    gone: list[Ref] = []
    for domain, tables in CHILD_TABLES.items():
        mine = [r for r in writing if r.domain is domain and r.rows]
        if not mine:
            continue
        args = ([r.school_id for r in mine], [r.legacy_id for r in mine], [r.source_ts for r in mine])
        for table in tables:
            kept = [str(row.values["id"]) for r in mine for row in r.rows if row.table == table]
            gone += [(table, r[0]) for r in await conn.fetch(_DROP[table], *args, kept)]
    return gone


def _holders_sql(table: str, columns: tuple[str, ...]) -> str:
    types = dict(TABLES[table].columns)
    params = ", ".join(f"${n}::text[]" for n in range(1, len(columns) + 1))
    names = ", ".join(f"v{n}" for n in range(len(columns)))
    match = " AND ".join(f"t.{c} = c.v{n}::{types[c]}" for n, c in enumerate(columns))
    role = ", t.role" if table == "users" else ", NULL::text AS role"
    return (
        f"SELECT DISTINCT c.n, t.id::text AS id, t.school_id, t.legacy_id{role}"
        f" FROM unnest({params}) WITH ORDINALITY AS c ({names}, n)"
        f" JOIN {table} t ON {match} AND t.deleted_at IS NULL"
    )


_HOLDERS = {(table, columns): _holders_sql(table, columns) for table, keys in UNIQUE_KEYS.items() for columns in keys}


async def holders(conn: asyncpg.Connection, wanted: Iterable[Claim]) -> list[Held]:
    """The live rows that hold any of these unique values (one statement per key asked about)."""
    by_key: dict[tuple[str, tuple[str, ...]], list[Claim]] = {}
    for claim in set(wanted):
        by_key.setdefault((claim[0], claim[1]), []).append(claim)
    found: list[Held] = []
    for (table, columns), asked in sorted(by_key.items()):
        values = [list(column) for column in zip(*(c[2] for c in asked), strict=True)]
        for r in await conn.fetch(_HOLDERS[(table, columns)], *values):
            domain = domain_of_row(table, r["role"])
            found.append(Held(asked[r["n"] - 1], table, r["id"], (r["school_id"], domain.value, r["legacy_id"])))
    return found
