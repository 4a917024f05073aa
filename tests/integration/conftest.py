"""Real parts: an embedded Kafka-compatible broker and an embedded PostgreSQL on free
ports, and the five services as separate OS processes, for the whole test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schoolmig.runner import send_override, wait_for_report
from schoolmig.sdk import build_envelopes, publish_snapshot
from schoolmig.stack import Stack
from shared.ledger.accounting import record_counts
from shared.platform.db import apply_migrations, create_pool
from shared.platform.embedded import EmbeddedKafka, EmbeddedPostgres
from shared.platform.kafka import topic_partitions
from shared.platform.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka]:
    broker = EmbeddedKafka().start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres().start()
    yield server
    server.cleanup()


API_TOKEN = "it-operator-token"
SERVICE_KEY = "it-service-key"  # signing keys (shared.platform.signing): the stack's and one operator's
OPERATOR = "it-operator"
OPERATOR_KEY = "it-operator-key"


@pytest.fixture(scope="session")
def settings(kafka: EmbeddedKafka, postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings().model_copy(
        update={
            "backup_dir": tmp_path_factory.mktemp("backups"),
            "incomplete_snapshot_timeout_s": 2.0,
            "kafka_bootstrap_servers": kafka.bootstrap_servers,
            "database_url": postgres.dsn,
            "topic_prefix": "it",
            "batch_timeout_ms": 50,
            "sync_poll_interval_s": 0.2,
            "graceful_timeout_s": 5.0,
            "log_level": "INFO",
            "api_token": API_TOKEN,
            "service_key": SecretStr(SERVICE_KEY),
            "operator": OPERATOR,
            "operator_keys": SecretStr(f"{OPERATOR}={OPERATOR_KEY}"),
            "operator_key": SecretStr(OPERATOR_KEY),
            "barrier_timeout_s": 60.0,
            "redrive_after_s": 20.0,
        }
    )


class ServiceLogs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, service: str, line: str) -> None:
        self.lines.append((service, line))

    def of(self, service: str) -> list[str]:
        return [line for s, line in self.lines if s == service]


@pytest.fixture(scope="session")
def service_logs() -> ServiceLogs:
    return ServiceLogs()


@pytest.fixture(scope="session")
async def stack(settings: Settings, service_logs: ServiceLogs) -> AsyncIterator[Stack]:
    running = await Stack(settings, sink=service_logs, metrics_ports=True).start()
    yield running
    await running.stop()
    if dump := os.environ.get("SCHOOLMIG_TEST_SERVICE_LOGS"):  # for a failed run's post-mortem
        with open(dump, "w", encoding="utf-8") as out:
            out.writelines(f"{service}: {line}\n" for service, line in service_logs.lines)


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url
    await apply_migrations(settings.database_url)
    created = await create_pool(settings.database_url)
    yield created
    await created.close()


def localstorage_dump(**domains: Any) -> bytes:
    """A raw localStorage dump: every value a JSON *string*, as the browser holds it."""
    return json.dumps(
        {key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False) for key, value in domains.items()},
        ensure_ascii=False,
    ).encode()


async def migrate(
    settings: Settings,
    pool: asyncpg.Pool,
    school_id: str,
    content: bytes,
    timeout_s: float = 60,
    override_audit: str | None = None,
    snapshot_id: str | None = None,
    taken_at: datetime | None = None,
    device_id: str = "",
) -> dict[str, Any]:
    """Publish one snapshot through the public door and wait for the coordinator's report
    (``override_audit``: let it past critical audit findings, as an operator would;
    ``snapshot_id``: publish this upload again, e.g. a retry; ``taken_at``: when it was
    read, default now; ``device_id``: the browser it was read from, default the unnamed one)."""
    assert settings.kafka_bootstrap_servers
    planned, _ = build_envelopes(content, school_id, snapshot_id=snapshot_id, taken_at=taken_at, device_id=device_id)
    if override_audit:
        await send_override(settings.kafka_bootstrap_servers, settings, school_id, planned.snapshot_id, override_audit)
    manifest = await publish_snapshot(
        settings.kafka_bootstrap_servers,
        settings.resolved_ingest_topic,
        school_id,
        content,
        snapshot_id=planned.snapshot_id,
        taken_at=planned.taken_at,
        device_id=device_id,
    )
    report = await wait_for_report(
        pool, school_id, manifest.snapshot_id, time.monotonic() + timeout_s, overridden=bool(override_audit)
    )
    if report is None:  # where it stands, for the failure's message
        phase = await pool.fetchrow("SELECT phase, snapshot_id FROM migration.school_phase WHERE school_id = $1", school_id)
        released = await pool.fetchrow(
            "SELECT released_at, unchanged_of FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2",
            school_id,
            manifest.snapshot_id,
        )
        counts = await record_counts(pool, school_id, manifest.snapshot_id)
        unaccounted = {d.value: c for d, c in (counts or {}).items() if not c.accounted}
        raise AssertionError(
            f"no report for {school_id} within {timeout_s}s: phase {dict(phase) if phase else None}, "
            f"snapshot {dict(released) if released else 'not stored'}, unaccounted {unaccounted}"
        )
    return report


def cli(settings: Settings, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``schoolmig …`` as an operator runs it, against the test stack's broker, database and topics."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "SCHOOLMIG_TOPIC_PREFIX": settings.topic_prefix,
        "SCHOOLMIG_OPERATOR": OPERATOR,
        "SCHOOLMIG_OPERATOR_KEY": OPERATOR_KEY,
        # not a developer's own `up` or `init` (.schoolmig/ in the working directory)
        "SCHOOLMIG_STATE_DIR": os.environ.get("SCHOOLMIG_TEST_STATE_DIR", "/nonexistent/schoolmig-test-state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "schoolmig.cli", *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


async def read_topic(bootstrap: str, topic: str, *, want: int, group: str, timeout_s: float = 15) -> list[dict[str, Any]]:
    """Read JSON messages from the start of a topic until ``want`` arrived or the time is up.
    Every partition is assigned to this reader (no consumer group: ``group`` only names the
    caller), so nothing waits for a group to form."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        consumer.assign(await topic_partitions(consumer, topic, attempts=50))
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(found) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            found += [json.loads(m.value) for messages in batch.values() for m in messages]
    finally:
        await consumer.stop()
    return found
