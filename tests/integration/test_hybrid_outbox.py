"""The hybrid client against the real stack, with the broker cut away mid-stream.

A school is migrated; its app then writes through :class:`schoolmig.hybrid.HybridClient`,
which asks the coordinator's HTTP API for the mode and publishes each change to the real
broker. Halfway, the broker stops answering (the process is frozen with SIGSTOP: its data
stays, no connection is refused, requests just time out, as on a lost network). The app
keeps writing: every write lands in its local file and in the durable outbox. When the
broker answers again the outbox drains, and the database ends equal to the app's own data,
every change once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import asyncpg

from schoolmig.export import live_records
from schoolmig.hybrid import HybridClient, LocalData, Outbox, http_mode_source, kafka_publisher
from schoolmig.stack import Stack
from services.coordinator.lag import consumer_groups, consumer_lag
from shared.catalog.domains import Domain
from shared.platform.embedded import EmbeddedKafka
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from tests.integration.conftest import migrate
from tests.integration.test_live_changes import BASE, T0, dump_of

SCHOOL = "it-hybrid"


async def test_the_outbox_loses_nothing_while_the_broker_is_away(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    assert settings.kafka_bootstrap_servers
    base = {d: {r["id"]: r for r in records} for d, records in BASE.items()}
    report = await migrate(settings, pool, SCHOOL, dump_of(base, T0), timeout_s=120)
    assert report["phase"] == "validated"

    local = LocalData(tmp_path / "local.json")
    local.path.write_text(json.dumps({d.value: list(records.values()) for d, records in base.items()}))
    client = HybridClient(
        SCHOOL,
        "tablet-1",
        local=local,
        outbox=Outbox(tmp_path / "outbox"),
        publisher=kafka_publisher(settings.kafka_bootstrap_servers, settings.resolved_ingest_topic, timeout_s=1.5),
        mode=http_mode_source(stack.api_url),
        retry_s=(0.2, 1.0),
    )
    payments = list(base[Domain.PAYMENTS].values())
    writes = 0
    for n, payment in enumerate(payments):  # the broker is there
        await client.update(Domain.PAYMENTS, {**payment, "amount": 100 + n})
        writes += 1
    assert client.outbox.pending() == []

    broker = kafka._process
    assert broker is not None
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        for n in range(3):  # the broker is away: the app keeps working
            await client.create(Domain.PAYMENTS, {**payments[0], "id": f"payment-offline-{n}", "amount": 200 + n})
            writes += 1
        await client.delete(Domain.PAYMENTS, payments[-1]["id"])
        writes += 1
        assert len(client.outbox.pending()) == 4  # all of them waiting, none lost
    finally:
        os.kill(broker.pid, signal.SIGCONT)

    stop = asyncio.Event()
    runner = asyncio.create_task(client.run(stop))
    deadline = time.monotonic() + 60
    while client.outbox.pending() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await runner
    assert client.outbox.pending() == []

    groups = consumer_groups(Topics.from_settings(settings))
    while time.monotonic() < deadline:
        stored = await pool.fetchval("SELECT count(*) FROM migration.changes WHERE school_id = $1", SCHOOL)
        lag = await consumer_lag(settings.kafka_bootstrap_servers, groups)
        if stored == writes and not any(lag.values()):
            break
        await asyncio.sleep(0.5)
    assert stored == writes  # every change once (a retry of an acknowledged one is the same row)
    held = await live_records(pool, SCHOOL)
    mine = local.read()
    for domain in base:
        assert {str(r["id"]): r for r in held[domain]} == {str(r["id"]): r for r in mine[domain.value]}, domain
