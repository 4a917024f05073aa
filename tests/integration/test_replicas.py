"""Several loaders and transforms at once give the same database as one of each.

The same messy schools (orphans, duplicates, bad values: the spec's real data) go through
the session's single-replica stack and through a second stack with three loader and three
transform processes (its own topics and database, same broker and server). Every target
table, the ledger and the quarantine must hold the same rows, byte for byte; every school
validates. With several loaders a child parked by one while another commits its parent
used to stay parked and be quarantined as an orphan: 15 % of the records once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from schoolmig.demo import school_dump
from schoolmig.runner import report_so_far, wait_for_reports
from schoolmig.sdk import build_envelopes, publish_snapshot
from schoolmig.stack import Stack
from shared.catalog.tables import LOAD_ORDER
from shared.platform.db import create_pool
from shared.platform.embedded import EmbeddedPostgres
from shared.platform.settings import Settings
from shared.wire.messages import SnapshotManifest
from tests.integration.conftest import ServiceLogs

pytestmark = pytest.mark.integration

SCHOOLS = [f"rep-{i}" for i in range(1, 7)]


@pytest.fixture(scope="module")
async def replica_stack(
    settings: Settings, postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, asyncpg.Pool, ServiceLogs]]:
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute("CREATE DATABASE replicas")
    finally:
        await admin.close()
    own = settings.model_copy(
        update={
            "topic_prefix": "rep",
            "database_url": postgres.dsn.rsplit("/", 1)[0] + "/replicas",
            "backup_dir": tmp_path_factory.mktemp("replica-backups"),
            "api_port": 0,
            "incomplete_snapshot_timeout_s": 60.0,
        }
    )
    logs = ServiceLogs()
    stack = await Stack(own, sink=logs, replicas={"loader": 3, "transform": 3}).start()
    pool = await create_pool(stack.database_url)
    try:
        yield stack, pool, logs
    finally:
        await pool.close()
        await stack.stop()


async def migrate_all(
    settings: Settings, pool: asyncpg.Pool, contents: dict[str, bytes], planned: dict[str, SnapshotManifest], logs: ServiceLogs
) -> dict[str, str]:
    """``planned``: each school's snapshot (id and read time), the same on both stacks (their
    tables are compared)."""
    assert settings.kafka_bootstrap_servers
    manifests = await asyncio.gather(
        *(
            publish_snapshot(
                settings.kafka_bootstrap_servers,
                settings.resolved_ingest_topic,
                school,
                content,
                snapshot_id=planned[school].snapshot_id,
                taken_at=planned[school].taken_at,
            )
            for school, content in contents.items()
        )
    )
    # Not given up on when reported incomplete: the session's ingest says so after 2 s (to
    # test that), and twelve schools at once on two cores can take longer to arrive whole.
    reports = await wait_for_reports(
        pool, [(m.school_id, m.snapshot_id) for m in manifests], stall_timeout_s=60, incomplete_is_final=False
    )
    stuck = {pair: await report_so_far(pool, *pair) for pair, report in reports.items() if report is None}
    assert not stuck, (
        stuck,
        [
            f"{n}: {line}"
            for n, line in logs.lines[-4000:]
            if n.startswith(("validator", "coordinator"))
            and ("ERROR" in line or "rep-" in line or "failed" in line or "Traceback" in line)
        ][-40:],
    )
    return {school: report["phase"] for (school, _), report in reports.items() if report}


async def checksums(pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    """(rows, md5 of every column of every row) per table, for the test's schools."""
    out = {}
    queries = {spec.name: f"SELECT * FROM {spec.name} t WHERE t.school_id = ANY($1)" for spec in LOAD_ORDER} | {
        "ledger": "SELECT school_id, domain, legacy_id, snapshot_id, record_index, source_ts"
        " FROM migration.loaded_records t WHERE t.school_id = ANY($1)",
        "quarantine": "SELECT school_id, snapshot_id, domain, record_index, legacy_id, reason, payload"
        " FROM migration.quarantine t WHERE t.school_id = ANY($1)",
    }
    for name, query in queries.items():
        row = await pool.fetchrow(
            f"SELECT count(*) AS n, md5(string_agg(q::text, '|' ORDER BY q::text)) AS sum FROM ({query}) q", SCHOOLS
        )
        out[name] = (row["n"], row["sum"])
    return out


async def test_three_loaders_and_three_transforms_give_the_same_database_as_one(
    settings: Settings,
    pool: asyncpg.Pool,
    stack: Stack,
    service_logs: ServiceLogs,
    replica_stack: tuple[Stack, asyncpg.Pool, ServiceLogs],
    tmp_path: Path,
) -> None:
    replicas, replica_pool, logs = replica_stack
    contents = {school: json.dumps(school_dump(i, seed=11), ensure_ascii=False).encode() for i, school in enumerate(SCHOOLS, 1)}
    ids = {school: build_envelopes(content, school)[0] for school, content in contents.items()}
    started = time.monotonic()
    single, several = await asyncio.gather(
        migrate_all(settings, pool, contents, ids, service_logs),
        migrate_all(
            replicas.settings.model_copy(update={"kafka_bootstrap_servers": replicas.bootstrap_servers}),
            replica_pool,
            contents,
            ids,
            logs,
        ),
    )
    assert set(single.values()) == {"validated"} and set(several.values()) == {"validated"}, (single, several)
    one, three = await checksums(pool), await checksums(replica_pool)
    assert one["ledger"][0] > 10_000 and one["grades"][0] > 1_000
    assert three == one
    orphans = await replica_pool.fetchval(
        "SELECT count(*) FROM migration.quarantine WHERE school_id = ANY($1) AND reason = 'orphaned_reference'", SCHOOLS
    )
    assert orphans == await pool.fetchval(
        "SELECT count(*) FROM migration.quarantine WHERE school_id = ANY($1) AND reason = 'orphaned_reference'", SCHOOLS
    )
    loaders = {name for name, _ in logs.lines if name.startswith("loader")}
    assert loaders == {"loader", "loader-2", "loader-3"}
    assert time.monotonic() - started < 300
