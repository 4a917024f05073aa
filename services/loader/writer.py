"""The loader's write path: one transaction per batch, parents before children.

Per table: COPY the batch into a temporary staging table, then one
``INSERT … SELECT … ON CONFLICT (id) DO UPDATE … WHERE target.source_ts <= new.source_ts``,
so redelivered or re-ordered writes never overwrite a newer row (last writer wins).
The ledger ``migration.loaded_records`` is written in the same transaction: a record
counts as loaded exactly when its rows are committed.

A batch the database rejects for good is written again record by record; the records it
still rejects go to quarantine with the database's message and the rest land. Transient
failures (connection lost, restart, deadlock) are retried after 1 s, 5 s, 15 s, then
raised so the consumer rewinds and the batch is delivered again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from services.loader.convert import rows_by_table
from shared.db import RETRY_DELAYS_S, TRANSIENT_ERRORS, pg_text
from shared.mapping import reverse_record
from shared.messages import MappedRecord, QuarantinedRecord, Stage, quarantined
from shared.tables import LOAD_ORDER, TableSpec

log = logging.getLogger("schoolmig.loader")
T = TypeVar("T")


_DEFAULTED = {"created_at", "updated_at"}  # NULL from a record without timestamps: now()


def _upsert_sql(spec: TableSpec) -> str:
    # Identifiers come from the fixed table catalogue, never from input; values go via COPY.
    cols = ", ".join(spec.column_names)
    selected = ", ".join(f"coalesce({c}, now())" if c in _DEFAULTED else c for c in spec.column_names)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in spec.column_names if c not in ("id", "created_at"))
    return (
        f"INSERT INTO {spec.name} AS t ({cols}) SELECT {selected} FROM _stage_{spec.name} "
        f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE t.source_ts <= EXCLUDED.source_ts"
    )


_UPSERTS = {spec.name: _upsert_sql(spec) for spec in LOAD_ORDER}
# Staging tables have the target's columns and no constraints (CREATE TABLE AS copies none):
# the target's constraints judge each row at the upsert.
_STAGING = "; ".join(
    f"CREATE TEMP TABLE IF NOT EXISTS _stage_{s.name} ON COMMIT DELETE ROWS AS SELECT * FROM {s.name} WITH NO DATA"
    for s in LOAD_ORDER
)
# Marks the transaction as the migration's: the updated_at triggers keep the source's timestamps.
_LOADING = "SET LOCAL schoolmig.loading = 'on'"
_LEDGER = """
INSERT INTO migration.loaded_records (school_id, domain, legacy_id, snapshot_id, record_index, source_ts)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[])
ON CONFLICT (school_id, domain, legacy_id) DO UPDATE
   SET snapshot_id = EXCLUDED.snapshot_id, record_index = EXCLUDED.record_index,
       source_ts = EXCLUDED.source_ts, loaded_at = now()
 WHERE migration.loaded_records.source_ts <= EXCLUDED.source_ts
"""
_QUARANTINE = """
INSERT INTO migration.quarantine
  (school_id, snapshot_id, domain, record_index, legacy_id, stage, reason, message, payload, payload_bytes)
SELECT s, sn, d, i, l, st, r, m, p::jsonb, b
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
              $10::bytea[])
       AS q (s, sn, d, i, l, st, r, m, p, b)
ON CONFLICT (school_id, snapshot_id, domain, record_index) DO NOTHING
"""


async def with_retries(operation: Callable[[], Awaitable[T]], what: str) -> T:
    for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
        try:
            return await operation()
        except TRANSIENT_ERRORS as exc:
            if delay is None:
                raise
            wait = delay * random.uniform(0.8, 1.2)
            log.warning("%s: transient %s (attempt %d), retrying in %.1fs", what, type(exc).__name__, attempt + 1, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


class Writer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def load(self, records: Sequence[MappedRecord]) -> list[QuarantinedRecord]:
        """Write a batch; return the records the database refused (already quarantined)."""
        if not records:
            return []
        try:
            await with_retries(lambda: self._write(records), "load batch")
            return []
        except asyncpg.PostgresError as exc:
            if isinstance(exc, TRANSIENT_ERRORS):
                raise
            log.info("batch of %d rejected (%s); isolating record by record", len(records), exc.sqlstate)
        refused: list[QuarantinedRecord] = []
        for record in records:
            try:
                await with_retries(lambda: self._write([record]), "load record")
            except asyncpg.PostgresError as exc:
                if isinstance(exc, TRANSIENT_ERRORS):
                    raise
                refused.append(_refusal(record, exc))
        await self.quarantine(refused)
        return refused

    async def _write(self, records: Sequence[MappedRecord]) -> None:
        tables = rows_by_table(records)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOADING)
            await conn.execute(_STAGING)
            for spec in LOAD_ORDER:
                rows = tables.get(spec.name)
                if rows:
                    await conn.copy_records_to_table(f"_stage_{spec.name}", records=rows, columns=spec.column_names)
                    await conn.execute(_UPSERTS[spec.name])
            await conn.execute(
                _LEDGER,
                [r.school_id for r in records], [r.domain.value for r in records], [r.legacy_id for r in records],
                [r.snapshot_id for r in records], [r.index for r in records], [r.source_ts for r in records],
            )  # fmt: skip

    async def quarantine(self, records: Sequence[QuarantinedRecord]) -> None:
        if not records:
            return

        # JSON text, cast in SQL: a list-shaped payload inside a jsonb[] parameter would be
        # read as one more array dimension. A payload jsonb cannot hold goes in as bytes.
        texts = [json.dumps(r.payload, ensure_ascii=False) for r in records]
        storable = ["\\u0000" not in t for t in texts]

        async def write() -> None:
            await self.pool.execute(
                _QUARANTINE,
                [r.school_id for r in records], [r.snapshot_id for r in records], [r.domain.value for r in records],
                [r.index for r in records], [pg_text(r.legacy_id) for r in records], [r.stage.value for r in records],
                [r.reason for r in records], [pg_text(r.message) for r in records],
                [t if ok else None for t, ok in zip(texts, storable, strict=True)],
                [None if ok else t.encode() for t, ok in zip(texts, storable, strict=True)],
            )  # fmt: skip

        await with_retries(write, "store quarantine")


def _refusal(record: MappedRecord, exc: asyncpg.PostgresError) -> QuarantinedRecord:
    # The database's message can quote values (an email in a unique violation): it goes to the
    # quarantine table with the payload, never to logs or metrics.
    return quarantined(
        record,
        stage=Stage.LOADER,
        reason=f"db_{type(exc).__name__.removesuffix('Error').lower()}",
        message=f"{exc.sqlstate}: {getattr(exc, 'message', str(exc))} {getattr(exc, 'detail', '') or ''}".strip(),
        payload=reverse_record(record.domain, [(row.table, row.values) for row in record.rows]),  # the source record, exactly
    )
