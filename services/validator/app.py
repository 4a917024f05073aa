"""Validator service wiring: validation commands in; results stored and published as events.

Built at start-up by :func:`create_app` (``shared.service.service_app``); what the handler
does is ``services.validator.validating``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.validator.validating import Validating
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, raw_bodies
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.service import Wiring, report_readiness, service_app

Policy = Annotated[Validating, Context("policy")]


def routes(settings: Settings) -> KafkaRouter:
    router = KafkaRouter()
    commands = Topics.from_settings(settings).validate_commands

    @router.subscriber(commands, **consumer_options(settings, "schoolmig-validator", batch=True), decoder=raw_bodies)
    async def on_validate(bodies: list[bytes], message: KafkaMessage, validating: Policy) -> None:
        await validating.commands(message.raw_message, bodies)

    return router


@asynccontextmanager
async def policy(w: Wiring) -> AsyncIterator[Validating]:
    yield Validating(**vars(w))


def create_app(settings: Settings | None = None) -> FastStream:
    app, _ = service_app(Stage.VALIDATOR, routes, policy, settings=settings)
    report_readiness(app)  # last: ready once every start-up hook has run
    return app
