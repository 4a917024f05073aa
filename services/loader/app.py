"""Loader service wiring: rows.<domain> and quarantine batches in; PostgreSQL out.

Built at start-up by :func:`create_app`; what each handler does is ``services.loader.loading``.
Offsets are committed only after the poll's transaction commits (``NACK_ON_ERROR`` and the
guard of ``shared.failures``: an exception rewinds the consumer instead of skipping).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, ContextRepo, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.loader.loading import Loading
from services.loader.writer import Writer
from shared.failures.guard import guarded_broker
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, raw_bodies
from shared.platform.logs import setup_logging
from shared.platform.service import prepare, report_readiness
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.telemetry import setup_telemetry
from shared.platform.topics import Topics

LoadingDep = Annotated[Loading, Context("loading")]


def routes(settings: Settings) -> KafkaRouter:
    """The loader's handlers: every rows topic in one consumer, the quarantine topic in another."""
    topics = Topics.from_settings(settings)
    router = KafkaRouter()

    @router.subscriber(*topics.rows_topics, **consumer_options(settings, "schoolmig-loader", batch=True), decoder=raw_bodies)
    async def on_rows(bodies: list[bytes], message: KafkaMessage, loading: LoadingDep) -> None:
        await loading.rows(message.raw_message, bodies, message.consumer)

    @router.subscriber(
        topics.quarantine, **consumer_options(settings, "schoolmig-loader-quarantine", batch=True), decoder=raw_bodies
    )
    async def on_quarantine(bodies: list[bytes], message: KafkaMessage, loading: LoadingDep) -> None:
        await loading.quarantine(message.raw_message, bodies)

    return router


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    setup_logging("loader", settings.log_level, settings.log_format)  # first: FastStream logs from its start
    keyring = Keyring.for_service(settings)
    broker, letters = guarded_broker(settings, Stage.LOADER)
    broker.include_router(routes(settings))
    metrics = setup_telemetry("loader", settings.metrics_port, settings.metrics_host)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        keyring.require()
        writer = Writer(await prepare(settings, "loader", pool_size=8))
        context.set_global("loading", Loading(writer, settings, keyring, letters, metrics))
        try:
            yield
        finally:
            await writer.pool.close()
            await letters.close()

    app = FastStream(broker, lifespan=lifespan)
    report_readiness(app)  # last: ready once every start-up hook above has run
    return app
