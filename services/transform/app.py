"""Transform service wiring: raw.<domain> batches in; rows.<domain> and quarantine batches out.

Built at start-up by :func:`create_app` (``shared.service.service_app``); what the handler
does is ``services.transform.transforming``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.transform.transforming import Transforming
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, raw_bodies
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.service import Wiring, report_readiness, service_app

Policy = Annotated[Transforming, Context("policy")]


def routes(settings: Settings) -> KafkaRouter:
    router = KafkaRouter()
    raw = Topics.from_settings(settings).raw_topics

    @router.subscriber(*raw, **consumer_options(settings, "schoolmig-transform", batch=True), decoder=raw_bodies)
    async def on_raw(bodies: list[bytes], message: KafkaMessage, transforming: Policy) -> None:
        await transforming.raw(message.raw_message, bodies)

    return router


@asynccontextmanager
async def policy(w: Wiring) -> AsyncIterator[Transforming]:
    yield Transforming(**vars(w))


def create_app(settings: Settings | None = None) -> FastStream:
    app, _ = service_app(Stage.TRANSFORM, routes, policy, settings=settings, pool_size=None)  # no database
    report_readiness(app)  # last: ready once every start-up hook has run
    return app
