"""Validator service wiring: validation commands in; results stored and published as events."""

from __future__ import annotations

import logging
from typing import Annotated

import asyncpg
from faststream import Context, FastStream

from services.validator.checks import validate
from services.validator.queries import gather_facts, store_result
from shared.kafka import consumer_options, make_broker
from shared.messages import ValidationCompleted, ValidationRequested
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


@broker.subscriber(topics.validate_commands, **consumer_options(settings, "schoolmig-validator"))
async def on_validate(command: ValidationRequested, pool: Pool) -> None:
    ok, domains = validate(await gather_facts(pool, command.school_id, command.snapshot_id))
    result = ValidationCompleted(
        run_id=command.run_id, school_id=command.school_id, snapshot_id=command.snapshot_id, ok=ok, domains=domains
    )
    await store_result(pool, result)
    await broker.publish(result, topics.events, key=command.school_id.encode())
    log.info("validated %s/%s: %s", command.school_id, command.snapshot_id, "ok" if ok else "FAILED")
