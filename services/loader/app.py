"""Loader service wiring: rows.<domain> and quarantine batches in; PostgreSQL out.

Built at start-up by :func:`create_app` (``shared.service.service_app``); what each handler
does is ``services.loader.loading``. Offsets are committed only after the poll's transaction
commits (``NACK_ON_ERROR`` and the guard: an exception rewinds the consumer instead of skipping).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.loader.loading import Loading
from services.loader.writer import Writer
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, raw_bodies
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.service import Wiring, report_readiness, service_app

Policy = Annotated[Loading, Context("policy")]


def routes(settings: Settings) -> KafkaRouter:
    """Every rows topic in one consumer, the quarantine topic in another."""
    topics, router = Topics.from_settings(settings), KafkaRouter()

    @router.subscriber(*topics.rows_topics, **consumer_options(settings, "schoolmig-loader", batch=True), decoder=raw_bodies)
    async def on_rows(bodies: list[bytes], message: KafkaMessage, loading: Policy) -> None:
        await loading.rows(message.raw_message, bodies, message.consumer)

    @router.subscriber(
        topics.quarantine, **consumer_options(settings, "schoolmig-loader-quarantine", batch=True), decoder=raw_bodies
    )
    async def on_quarantine(bodies: list[bytes], message: KafkaMessage, loading: Policy) -> None:
        await loading.quarantine(message.raw_message, bodies)

    return router


@asynccontextmanager
async def policy(w: Wiring) -> AsyncIterator[Loading]:
    yield Loading(**vars(w), writer=Writer(w.pool))


def create_app(settings: Settings | None = None) -> FastStream:
    app, _ = service_app(Stage.LOADER, routes, policy, settings=settings, pool_size=8)
    report_readiness(app)  # last: ready once every start-up hook has run
    return app
