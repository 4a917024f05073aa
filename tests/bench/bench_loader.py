"""Benchmark: the loader's real write path against PostgreSQL's own limit, in one run.

The same mapped rows are loaded three ways into one embedded PostgreSQL:
- **plain COPY**: ``copy_records_to_table`` into bare copies of the target tables (no
  constraints, no indexes, no upsert): the database's limit on this machine;
- **the schema's ceiling**: the same COPY into the real, empty tables of a second
  database (keys, foreign keys, indexes, triggers), parents first, in one transaction,
  of the records whose parents exist: no write path that keeps the schema can beat it;
- **the loader**: ``Writer.load`` in batches, exactly as the service does (staging,
  upserts with last-writer-wins, primary/unique/foreign keys, indexes, triggers, the
  ledger, parking checks).

It prints and writes ``.bench/loader.json``: rows per second each way and the ratio
(the target: the loader at >= 60% of plain COPY for a 100-school dataset).

    make bench            # or: python -m tests.bench.bench_loader --schools 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import asyncpg

from schoolmig.demo import school_dump
from schoolmig.sdk import build_envelopes
from services.loader.convert import rows_by_table
from services.loader.parking import newest_per_record, plan
from services.loader.writer import Writer
from services.transform.records import transform
from shared.catalog.tables import LOAD_ORDER
from shared.platform.db import apply_migrations, create_pool
from shared.platform.embedded import EmbeddedPostgres
from shared.source.snapshot import parse_snapshot
from shared.wire.fanout import plan_fanout
from shared.wire.messages import MappedRecord, RawRecord
from tests.bench import write_figures


def mapped_dataset(schools: int) -> list[MappedRecord]:
    """Demo schools through ingest's fan-out (hints included) and the transform."""
    records: list[MappedRecord] = []
    for index in range(1, schools + 1):
        content = json.dumps(school_dump(index, seed=42)).encode()
        manifest, _ = build_envelopes(content, f"school-{index}")
        for item in plan_fanout(parse_snapshot(content, manifest.format), manifest):
            if isinstance(item.message, RawRecord):
                out = transform(item.message)
                if isinstance(out, MappedRecord):
                    records.append(out)
    return records


async def plain_copy(dsn: str, records: list[MappedRecord]) -> tuple[int, float]:
    conn = await asyncpg.connect(dsn)
    try:
        for spec in LOAD_ORDER:
            await conn.execute(f"CREATE TABLE bare_{spec.name} AS SELECT * FROM {spec.name} WITH NO DATA")
        from shared.platform.db import _init_connection

        await _init_connection(conn)
        tables = rows_by_table(records)  # conversion is not what this side measures
        started = time.perf_counter()
        for spec in LOAD_ORDER:
            await conn.copy_records_to_table(f"bare_{spec.name}", records=tables.get(spec.name, []), columns=spec.column_names)
        return sum(len(v) for v in tables.values()), time.perf_counter() - started
    finally:
        await conn.close()


async def schema_ceiling(dsn: str, records: list[MappedRecord]) -> tuple[int, float]:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("CREATE DATABASE ceiling")
    finally:
        await admin.close()
    ceiling_dsn = dsn.rsplit("/", 1)[0] + "/ceiling"
    await apply_migrations(ceiling_dsn)
    tables = rows_by_table(plan(newest_per_record(records), set()).ready)  # orphans would fail a key
    conn = await asyncpg.connect(ceiling_dsn)
    try:
        from shared.platform.db import _init_connection

        await _init_connection(conn)
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute("SET LOCAL schoolmig.loading = 'on'")
            for spec in LOAD_ORDER:
                await conn.copy_records_to_table(spec.name, records=tables.get(spec.name, []), columns=spec.column_names)
        return sum(len(v) for v in tables.values()), time.perf_counter() - started
    finally:
        await conn.close()


async def loader_path(dsn: str, records: list[MappedRecord], batch: int) -> float:
    pool = await create_pool(dsn, max_size=2)
    try:
        writer = Writer(pool)
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            await writer.load(records[start : start + batch])
        return time.perf_counter() - started
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path(".bench/loader.json"))
    args = parser.parse_args()

    records = mapped_dataset(args.schools)
    server = EmbeddedPostgres(durable=True).start()
    try:
        await apply_migrations(server.dsn)
        rows, copy_s = await plain_copy(server.dsn, records)
        ceiling_rows, ceiling_s = await schema_ceiling(server.dsn, records)
        load_s = await loader_path(server.dsn, records, args.batch)
        conn = await asyncpg.connect(server.dsn)
        loaded = await conn.fetchval("SELECT count(*) FROM migration.loaded_records")
        parked = await conn.fetchval("SELECT count(*) FROM migration.parked_records")
        await conn.close()
    finally:
        server.cleanup()
    result = {
        "schools": args.schools,
        "source_records_mapped": len(records),
        "rows": rows,
        "batch": args.batch,
        "postgres": "embedded 18, durable (fsync on)",
        "plain_copy_rows_per_s": round(rows / copy_s),
        "loader_rows_per_s": round(rows / load_s),
        "schema_ceiling_rows_per_s": round(ceiling_rows / ceiling_s),
        "schema_ceiling_vs_plain_copy": round((ceiling_rows / ceiling_s) / (rows / copy_s), 3),
        "loader_vs_plain_copy": round(copy_s / load_s, 3),
        "loader_vs_schema_ceiling": round((rows / load_s) / (ceiling_rows / ceiling_s), 3),
        "target_ratio": 0.6,
        "records_loaded": loaded,
        "records_parked_as_orphans": parked,
    }
    write_figures(args.out, result)


if __name__ == "__main__":
    asyncio.run(main())
