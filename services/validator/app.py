"""Validator service wiring: validation commands in; results stored and published as events.

Built at start-up by :func:`create_app`; what the handler does is ``services.validator.validating``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, ContextRepo, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.validator.validating import Validating
from shared.failures.guard import guarded_broker
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, raw_bodies
from shared.platform.logs import setup_logging
from shared.platform.service import prepare, report_readiness
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.telemetry import setup_telemetry
from shared.platform.topics import Topics

ValidatingDep = Annotated[Validating, Context("validating")]


def routes(settings: Settings) -> KafkaRouter:
    router = KafkaRouter()

    @router.subscriber(
        Topics.from_settings(settings).validate_commands,
        **consumer_options(settings, "schoolmig-validator", batch=True),
        decoder=raw_bodies,
    )
    async def on_validate(bodies: list[bytes], message: KafkaMessage, validating: ValidatingDep) -> None:
        await validating.commands(message.raw_message, bodies)

    return router


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    setup_logging("validator", settings.log_level, settings.log_format)  # first: FastStream logs from its start
    keyring = Keyring.for_service(settings)
    broker, letters = guarded_broker(settings, Stage.VALIDATOR)
    broker.include_router(routes(settings))
    setup_telemetry("validator", settings.metrics_port, settings.metrics_host)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        keyring.require()
        pool = await prepare(settings, "validator")
        context.set_global("validating", Validating(pool, broker, Topics.from_settings(settings), keyring, letters))
        try:
            yield
        finally:
            await pool.close()
            await letters.close()

    app = FastStream(broker, lifespan=lifespan)
    report_readiness(app)  # last: ready once every start-up hook above has run
    return app
