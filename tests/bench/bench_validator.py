"""Benchmark: validating a migrated database against its backups, and a baseline, in one run.

The database is built the way the pipeline builds it (ingest's stores for snapshots,
backups and audits; the loader's ``Writer`` for the rows; the coordinator's store for
orphans), for N demo schools (100 gives about 730k target rows). Then, timed:
- **the validator**: ``validate_all`` (checksums first, row diffs only where they
  differ), as many schools at once as there are cores (``--workers``);
- **the baseline**: reading every target row of every school out of PostgreSQL once
  (``SELECT *``), the least any row-by-row comparison has to do.

It prints and writes ``.bench/validator.json`` (the target: a clean 100-school database
in under 20 s on this machine).

    make bench            # or: python -m tests.bench.bench_validator --schools 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg

from schoolmig.demo import school_dump
from schoolmig.sdk import build_envelopes
from services.coordinator.store import CoordinatorStore
from services.ingest.store import IngestStore
from services.loader.writer import Writer
from services.transform.records import transform
from services.validator.digest import DOMAIN_TABLES
from services.validator.run import validate_school, worker_pool
from shared.ledger.quarantine import store_quarantine
from shared.platform.db import apply_migrations, create_pool
from shared.platform.embedded import EmbeddedPostgres
from shared.source.snapshot import parse_snapshot
from shared.wire.fanout import audit_summary, plan_fanout
from shared.wire.messages import (
    MappedRecord,
    QuarantinedRecord,
    RawRecord,
    ValidationCompleted,
)
from tests.bench import write_figures


async def validate_all(pool: asyncpg.Pool, snapshots: list[tuple[str, str]], workers: int) -> list[ValidationCompleted]:
    """Several schools at once, one per worker process (as the validator service does)."""
    gate = asyncio.Semaphore(workers)

    async def one(school_id: str, snapshot_id: str) -> ValidationCompleted:
        async with gate:
            return await validate_school(pool, school_id, snapshot_id, f"all-{uuid.uuid4()}")

    return list(await asyncio.gather(*(one(s, n) for s, n in snapshots)))


async def migrate_school(pool: asyncpg.Pool, index: int) -> tuple[str, str, int]:
    content = json.dumps(school_dump(index, seed=42)).encode()
    manifest, _ = build_envelopes(content, f"school-{index}")
    ingest = IngestStore(pool)
    parsed = parse_snapshot(content, manifest.format)
    summary = audit_summary(parsed)
    await ingest.save_manifest(manifest)
    await ingest.save_backup(manifest, content, "")
    await ingest.save_audit(manifest, summary, [])
    mapped: list[MappedRecord] = []
    quarantined: list[QuarantinedRecord] = []
    for item in plan_fanout(parsed, manifest):
        out = transform(item.message) if isinstance(item.message, RawRecord) else item.message
        (mapped if isinstance(out, MappedRecord) else quarantined).append(out)  # type: ignore[arg-type]
    await store_quarantine(pool, quarantined)
    writer = Writer(pool)
    for start in range(0, len(mapped), 2000):
        await writer.load(mapped[start : start + 2000])
    await ingest.mark_released(manifest, summary)
    await CoordinatorStore(pool).sweep_parked(manifest.school_id, manifest.snapshot_id)
    return manifest.school_id, manifest.snapshot_id, len(mapped)


async def read_everything(pool: asyncpg.Pool, schools: list[str]) -> int:
    rows = 0
    for school in schools:
        for tables in DOMAIN_TABLES.values():
            for table, role in tables:
                # Table names come from the fixed catalogue.
                where = "school_id = $1" + (" AND role = $2" if role else "")
                rows += len(await pool.fetch(f"SELECT * FROM {table} WHERE {where}", school, *([role] if role else [])))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="schools validated at once")
    parser.add_argument("--out", type=Path, default=Path(".bench/validator.json"))
    args = parser.parse_args()

    server = EmbeddedPostgres(durable=False).start()
    try:
        await apply_migrations(server.dsn)
        pool = await create_pool(server.dsn, max_size=4)
        started = time.perf_counter()
        migrated = [await migrate_school(pool, i) for i in range(1, args.schools + 1)]
        build_s = time.perf_counter() - started
        await pool.execute("VACUUM ANALYZE")

        started = time.perf_counter()
        baseline_rows = await read_everything(pool, [school for school, _, _ in migrated])
        baseline_s = time.perf_counter() - started

        worker_pool(args.workers)
        await validate_school(pool, *migrated[0][:2], "warm-up")  # worker processes start once
        started = time.perf_counter()
        results = await validate_all(pool, [(school, snapshot) for school, snapshot, _ in migrated], args.workers)
        validate_s = time.perf_counter() - started
        await pool.close()
    finally:
        server.cleanup()

    critical = sum(1 for r in results for d in r.domains for i in d.issues if i.severity == "critical")
    result = {
        "schools": args.schools,
        "target_rows": baseline_rows,
        "source_records": sum(d.total_records for r in results for d in r.domains),
        "database_build_s": round(build_s, 1),
        "workers": args.workers,
        "validate_all_s": round(validate_s, 2),
        "validated_rows_per_s": round(baseline_rows / validate_s),
        "baseline_read_every_row_s": round(baseline_s, 2),
        "validate_vs_read_every_row": round(validate_s / baseline_s, 2),
        "target_s": 20,
        "schools_ok": sum(r.ok for r in results),
        "critical_issues": critical,
        "issues_by_type": _issue_counts(results),
    }
    write_figures(args.out, result)


def _issue_counts(results: list[ValidationCompleted]) -> dict[str, int]:
    return dict(Counter(i.type for r in results for d in r.domains for i in d.issues))


if __name__ == "__main__":
    asyncio.run(main())
