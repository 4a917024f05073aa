"""Validator service wiring: validation commands in; results stored and published as events."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Annotated

import asyncpg
from faststream import Context, FastStream

from services.validator.queries import store_result
from services.validator.run import validate_school
from shared.kafka import consumer_options, make_broker
from shared.messages import ValidationRequested
from shared.service import prepare
from shared.settings import Settings
from shared.telemetry import setup_telemetry
from shared.topics import Topics

log = logging.getLogger("schoolmig.validator")

settings = Settings()
topics = Topics.from_settings(settings)
broker = make_broker(settings, client_id="validator")
app = FastStream(broker)
setup_telemetry("validator", settings.metrics_port, settings.metrics_host)

Pool = Annotated[asyncpg.Pool, Context("pool")]


@app.on_startup
async def start() -> None:
    app.context.set_global("pool", await prepare(settings, "validator"))


@app.on_shutdown
async def stop(pool: Pool) -> None:
    await pool.close()


@broker.subscriber(topics.validate_commands, **consumer_options(settings, "schoolmig-validator", batch=True))
async def on_validate(commands: list[ValidationRequested], pool: Pool) -> None:
    """Schools that sync together are validated together (their backups mapped in the worker
    processes side by side), not one after another; the offsets are committed once all are stored."""
    gate = asyncio.Semaphore(os.cpu_count() or 1)  # as many at once as there are worker processes

    async def one(command: ValidationRequested) -> None:
        async with gate:
            await validate_one(command, pool)

    # Every validation ends before a failure rewinds the batch (no copy runs beside its redelivery).
    outcomes = await asyncio.gather(*(one(c) for c in commands), return_exceptions=True)
    if failed := [o for o in outcomes if isinstance(o, BaseException)]:
        raise failed[0]


async def validate_one(command: ValidationRequested, pool: asyncpg.Pool) -> None:
    result = await validate_school(pool, command.school_id, command.snapshot_id, command.run_id)
    await store_result(pool, result)  # with the differing values: the database may hold them
    await broker.publish(result.for_publishing(), topics.events, key=command.school_id.encode())
    issues = Counter(i.type for d in result.domains for i in d.issues)
    log.info("validated %s/%s: %s %s", command.school_id, command.snapshot_id, "ok" if result.ok else "FAILED", dict(issues))
