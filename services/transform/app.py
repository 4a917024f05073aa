"""Transform service wiring: raw.<domain> batches in; rows.<domain> and quarantine batches out.

Built at start-up by :func:`create_app`; what the handler does is ``services.transform.transforming``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, ContextRepo, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.transform.transforming import Transforming
from shared.failures.guard import guarded_broker
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, ensure_topics, raw_bodies
from shared.platform.logs import setup_logging
from shared.platform.service import report_readiness, watch_topics
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.telemetry import setup_telemetry
from shared.platform.topics import Topics

TransformingDep = Annotated[Transforming, Context("transforming")]


def routes(settings: Settings) -> KafkaRouter:
    router = KafkaRouter()

    @router.subscriber(
        *Topics.from_settings(settings).raw_topics,
        **consumer_options(settings, "schoolmig-transform", batch=True),
        decoder=raw_bodies,
    )
    async def on_raw(bodies: list[bytes], message: KafkaMessage, transforming: TransformingDep) -> None:
        await transforming.raw(message.raw_message, bodies)

    return router


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    setup_logging("transform", settings.log_level, settings.log_format)  # first: FastStream logs from its start
    keyring = Keyring.for_service(settings)
    broker, letters = guarded_broker(settings, Stage.TRANSFORM)
    broker.include_router(routes(settings))
    metrics = setup_telemetry("transform", settings.metrics_port, settings.metrics_host)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        keyring.require()
        await ensure_topics(settings)
        watch_topics(settings)
        context.set_global("transforming", Transforming(broker, settings, keyring, letters, metrics))
        try:
            yield
        finally:
            await letters.close()

    app = FastStream(broker, lifespan=lifespan)
    report_readiness(app)  # last: ready once every start-up hook above has run
    return app
