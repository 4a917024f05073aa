"""Live changes through the real stack: how fast they apply, against the snapshot path in the
same run.

Schools are migrated from demo snapshots (the baseline: snapshot records per second, from
the first snapshot received to the last record loaded). Then every payment and grade of
every school is updated once, published as change messages of ``--per-message`` changes:
changes per second from the first publish to the last applied. Then single changes one at
a time: the latency from publish to applied (median, p95). Figures go to
``.bench/changes.json``; nothing here passes or fails.

    python -m tests.bench.bench_changes --schools 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from schoolmig.demo import school_dump
from schoolmig.runner import wait_for_report
from schoolmig.sdk import publish_snapshot
from schoolmig.stack import Stack
from shared.catalog.domains import Domain
from shared.platform.db import apply_migrations, create_pool
from shared.platform.embedded import EmbeddedKafka, EmbeddedPostgres
from shared.platform.settings import Settings
from shared.wire.messages import Change, ChangeBatch, ChangeOp
from tests.bench import write_figures

UPDATED = {"payments": Domain.PAYMENTS, "grades": Domain.GRADES}


async def applied(pool: asyncpg.Pool, client: str) -> int:
    return int(
        await pool.fetchval("SELECT count(*) FROM migration.record_versions WHERE starts_with(live_by, $1)", f"chg.{client}.")
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=5)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--singles", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(".bench/changes.json"))
    args = parser.parse_args()

    kafka, postgres = EmbeddedKafka().start(), EmbeddedPostgres().start()
    state = Path(tempfile.mkdtemp(prefix="schoolmig-bench-changes-"))
    settings = Settings().model_copy(
        update={
            "kafka_bootstrap_servers": kafka.bootstrap_servers,
            "database_url": postgres.dsn,
            "topic_prefix": "bench",
            "backup_dir": state / "backups",
            "state_dir": state,
            "service_key": SecretStr("bench-service-key-0123456789"),
        }
    )
    assert settings.kafka_bootstrap_servers and settings.database_url
    await apply_migrations(settings.database_url)
    pool = await create_pool(settings.database_url)
    stack = await Stack(settings, sink=lambda service, line: None).start()
    topic = settings.resolved_ingest_topic
    try:
        dumps = {f"bench-{i}": school_dump(i, 7, messy=False) for i in range(args.schools)}
        started = time.perf_counter()
        manifests = {
            school: await publish_snapshot(settings.kafka_bootstrap_servers, topic, school, json.dumps(d).encode())
            for school, d in dumps.items()
        }
        for school, manifest in manifests.items():
            report = await wait_for_report(pool, school, manifest.snapshot_id, time.monotonic() + 600)
            assert report is not None and report["phase"] == "validated", report and report.get("phase")
        window = await pool.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM max(loaded_at) - (SELECT min(received_at) FROM migration.snapshots)) AS s"
            " FROM migration.loaded_records"
        )
        snapshot_rate = float(window["n"]) / float(window["s"])
        snapshot_wall = time.perf_counter() - started

        # Every payment and grade updated once, by one client per school.
        moment = datetime.now(UTC)
        messages: list[tuple[str, bytes]] = []
        total = 0
        for school, dump in dumps.items():
            changes = []
            for key, domain in UPDATED.items():
                for record in json.loads(dump[key]):
                    changed = {**record, "comments" if domain is Domain.GRADES else "notes": "updated live"}
                    changes.append(
                        Change(
                            op=ChangeOp.UPDATE,
                            domain=domain,
                            record_id=str(record["id"]),
                            record=changed,
                            source_ts=moment,
                            seq=len(changes) + 1,
                        )
                    )
            total += len(changes)
            for i in range(0, len(changes), args.per_message):
                batch = ChangeBatch(school_id=school, client_id="bulk", changes=changes[i : i + args.per_message])
                messages.append((school, batch.model_dump_json().encode()))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5)
        await producer.start()
        try:
            started = time.perf_counter()
            await asyncio.gather(*[await producer.send(topic, body, key=school.encode()) for school, body in messages])
            published = time.perf_counter() - started
            while await applied(pool, "bulk") < total:
                await asyncio.sleep(0.1)
            bulk_s = time.perf_counter() - started

            latencies = []
            school = next(iter(dumps))
            payment = json.loads(dumps[school]["payments"])[0]
            for n in range(args.singles):
                change = Change(
                    op=ChangeOp.UPDATE,
                    domain=Domain.PAYMENTS,
                    record_id=str(payment["id"]),
                    record={**payment, "amount": 100 + n},
                    source_ts=moment + timedelta(seconds=n + 1),
                    seq=n + 1,
                )
                body = ChangeBatch(school_id=school, client_id="single", changes=[change]).model_dump_json().encode()
                t0 = time.perf_counter()
                await producer.send_and_wait(topic, body, key=school.encode())
                while (
                    await pool.fetchval(
                        "SELECT live_seq FROM migration.record_versions WHERE school_id = $1 AND domain = 'payments'"
                        " AND legacy_id = $2 AND live_client = 'single'",
                        school,
                        str(payment["id"]),
                    )
                    != n + 1
                ):
                    await asyncio.sleep(0.005)
                latencies.append(time.perf_counter() - t0)
        finally:
            await producer.stop()
    finally:
        await stack.stop()
        await pool.close()
        kafka.stop()
        postgres.cleanup()
    change_rate = total / bulk_s
    result: dict[str, Any] = {
        "schools": args.schools,
        "snapshot_records": int(window["n"]),
        "snapshot_records_per_s": round(snapshot_rate),
        "snapshot_wall_incl_validation_s": round(snapshot_wall, 2),
        "changes": total,
        "changes_per_message": args.per_message,
        "changes_published_s": round(published, 2),
        "changes_applied_s": round(bulk_s, 2),
        "changes_per_s": round(change_rate),
        "changes_vs_snapshot_records": round(change_rate / snapshot_rate, 3),
        "single_change_latency_ms": {
            "median": round(statistics.median(latencies) * 1000, 1),
            "p95": round(sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000, 1),
            "max": round(max(latencies) * 1000, 1),
        },
    }
    write_figures(args.out, result)


if __name__ == "__main__":
    asyncio.run(main())
