"""Validator service wiring: validation commands in; results stored and published as events."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Annotated, Any

import asyncpg
from faststream import Context, FastStream
from faststream.kafka import KafkaMessage
from pydantic import ValidationError

from services.validator.queries import store_result
from services.validator.run import validate_school
from shared.failures.deadletters import dead_letter, reject
from shared.failures.policy import classify
from shared.platform.kafka import consumer_options, make_broker, raw_bodies
from shared.platform.logs import setup_logging
from shared.platform.service import prepare, report_readiness
from shared.platform.settings import Settings
from shared.platform.signing import Keyring, publish
from shared.platform.telemetry import setup_telemetry
from shared.platform.topics import Topics
from shared.wire.batching import Unusable, signed_by
from shared.wire.messages import ValidationRequested, error_summary

log = logging.getLogger("schoolmig.validator")

settings = Settings()
setup_logging("validator", settings.log_level, settings.log_format)  # first: FastStream logs from its start
topics = Topics.from_settings(settings)
keyring = Keyring.for_service(settings)
broker = make_broker(settings, client_id="validator")
app = FastStream(broker)
setup_telemetry("validator", settings.metrics_port, settings.metrics_host)

Pool = Annotated[asyncpg.Pool, Context("pool")]


@app.on_startup
async def start() -> None:
    keyring.require()
    app.context.set_global("pool", await prepare(settings, "validator"))


@app.on_shutdown
async def stop(pool: Pool) -> None:
    await pool.close()


@broker.subscriber(topics.validate_commands, **consumer_options(settings, "schoolmig-validator", batch=True), decoder=raw_bodies)
async def on_validate(bodies: list[bytes], message: KafkaMessage, pool: Pool) -> None:
    """Schools that sync together are validated together (their backups mapped in the worker
    processes side by side), not one after another; the offsets are committed once all are stored.
    Only the coordinator's signed commands are acted on (``shared.platform.signing``)."""
    commands = []
    for record, body in zip(message.raw_message, bodies, strict=True):
        command = await accepted(record, body)
        if command is not None:
            commands.append((record, body, command))
    gate = asyncio.Semaphore(os.cpu_count() or 1)  # as many at once as there are worker processes

    async def one(record: Any, body: bytes, command: ValidationRequested) -> None:
        async with gate:
            try:
                await validate_one(command, pool)
            except Exception as exc:
                if classify(exc) == "transient":  # the whole poll again, after its partitions wait
                    raise
                await dead_letter(
                    broker,
                    topics.deadletter,
                    record,
                    body,
                    "handler_failed",  # this school's, no one else's
                    f"validation raised {type(exc).__name__}",
                    error_class=type(exc).__name__,
                )
                log.exception("validation of %s/%s failed", command.school_id, command.snapshot_id)

    # Every validation ends before a failure rewinds the batch (no copy runs beside its redelivery).
    outcomes = await asyncio.gather(*(one(*c) for c in commands), return_exceptions=True)
    if failed := [o for o in outcomes if isinstance(o, BaseException)]:
        raise failed[0]


async def accepted(record: Any, body: bytes) -> ValidationRequested | None:
    if isinstance(unusable := signed_by(record, body, keyring), Unusable):
        await reject(broker, topics.deadletter, record, body, unusable)
        return None
    try:
        return ValidationRequested.model_validate_json(body)
    except ValidationError as exc:
        await dead_letter(broker, topics.deadletter, record, body, "invalid_internal_message", error_summary(exc))
        return None


async def validate_one(command: ValidationRequested, pool: asyncpg.Pool) -> None:
    result = await validate_school(
        pool, command.school_id, command.snapshot_id, command.run_id, changes_until=command.changes_until
    )
    await store_result(pool, result)  # with the differing values: the database may hold them
    await publish(broker, keyring, result.for_publishing(), topics.events, key=command.school_id.encode())
    issues = Counter(i.type for d in result.domains for i in d.issues)
    log.info("validated %s/%s: %s %s", command.school_id, command.snapshot_id, "ok" if result.ok else "FAILED", dict(issues))


report_readiness(app)  # last: ready once every start-up hook above has run
