"""`schoolmig up` supervises the embedded PostgreSQL and broker it started, not only the services.

A stack that starts its own servers (as `make run` does) has its postmaster killed with
SIGKILL (its backends stay behind, holding the shared memory, and `postmaster.pid` stays: a
plain start then fails) and later its broker: each is restarted on the same address, the
broker with its topics created again, and a school still migrates through both.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from schoolmig.demo import school_dump
from schoolmig.stack import Stack
from shared.platform.db import create_pool
from shared.platform.settings import Settings
from tests.integration.conftest import OPERATOR, OPERATOR_KEY, SERVICE_KEY, ServiceLogs, migrate


async def until(what: str, check, timeout_s: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except Exception:  # not yet
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s}s")


async def test_a_killed_postgres_and_a_killed_broker_come_back_on_their_own(tmp_path: Path) -> None:
    settings = Settings(
        topic_prefix="sup",
        backup_dir=tmp_path / "backups",
        state_dir=tmp_path / "state",
        sync_poll_interval_s=0.2,
        batch_timeout_ms=50,
        graceful_timeout_s=5.0,
        service_key=SecretStr(SERVICE_KEY),
        operator=OPERATOR,
        operator_keys=SecretStr(f"{OPERATOR}={OPERATOR_KEY}"),
        operator_key=SecretStr(OPERATOR_KEY),
    )
    logs = ServiceLogs()
    stack = await Stack(settings, sink=logs).start()
    assert stack.postgres is not None and stack.kafka is not None
    own = settings.model_copy(update={"kafka_bootstrap_servers": stack.bootstrap_servers, "database_url": stack.database_url})
    pool = await create_pool(stack.database_url)
    try:
        postmaster = stack.postgres._process  # noqa: SLF001 - the test kills what the stack started
        assert postmaster is not None
        os.kill(postmaster.pid, signal.SIGKILL)

        async def database_back() -> bool:
            conn = await asyncpg.connect(stack.database_url, timeout=2)
            try:
                return await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()

        await until("PostgreSQL restarted", database_back)
        assert stack.postgres._process is not None and stack.postgres._process.pid != postmaster.pid  # noqa: SLF001
        report = await migrate(
            own, pool, "sup-after-postgres", json.dumps(school_dump(1, seed=2, messy=False)).encode(), timeout_s=180
        )
        assert report["phase"] == "validated"

        broker = stack.kafka._process  # noqa: SLF001
        assert broker is not None
        os.kill(broker.pid, signal.SIGKILL)

        async def topics_back() -> bool:
            producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers)
            await producer.start()
            try:
                return bool(await producer.partitions_for(own.resolved_ingest_topic))
            finally:
                await producer.stop()

        await until("broker restarted with its topics", topics_back)
        assert any("restarted; topics created again" in line for line in logs.of("broker"))
        report = await migrate(
            own, pool, "sup-after-broker", json.dumps(school_dump(2, seed=2, messy=False)).encode(), timeout_s=240
        )
        assert report["phase"] == "validated"
    finally:
        await pool.close()
        await stack.stop()
