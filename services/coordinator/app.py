"""Coordinator service wiring: lifecycle events and operator commands in; phase moves,
validation commands, modes, outcomes and reports out; the HTTP API beside them.

Built at start-up by :func:`create_app` (``shared.service.service_app``). What comes in is
``services.coordinator.inbox``; the leader's rounds (sync checks, re-drives, outcomes) are
``services.coordinator.sync``; what the coordinator does to a school (advance, cutover,
rollback, …) is ``services.coordinator.operations``, the cutover's steps
``services.coordinator.cutover``. Once the consumers run: the rounds, the gauges and the
outbox drain start, cutovers a restart interrupted resume, and the API serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from faststream import Context, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.coordinator.http import make_api, serve
from services.coordinator.inbox import Inbox
from services.coordinator.operations import Operations
from services.coordinator.store import CoordinatorStore
from services.coordinator.sync import ACTOR, SyncMonitor
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, make_client_publisher, raw_body
from shared.platform.leases import Lease, named
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.service import Wiring, report_readiness, service_app, start_periodic, stop_periodic

OUTBOX_INTERVAL_S = 1.0
GAUGE_INTERVAL_S = 5.0  # progress and lag: a scrape-friendly cadence, light on the database
Policy = Annotated[Inbox, Context("policy")]


def routes(settings: Settings) -> KafkaRouter:
    topics, router = Topics.from_settings(settings), KafkaRouter()

    @router.subscriber(topics.operator_commands, **consumer_options(settings, "schoolmig-coordinator-commands"), decoder=raw_body)
    async def on_command(body: bytes, message: KafkaMessage, inbox: Policy) -> None:
        await inbox.on_command(body, message)

    @router.subscriber(topics.events, **consumer_options(settings, "schoolmig-coordinator"), decoder=raw_body)
    async def on_event(body: bytes, message: KafkaMessage, inbox: Policy) -> None:
        await inbox.on_event(body, message)

    return router


def create_app(settings: Settings | None = None) -> FastStream:
    running: dict[str, Any] = {}  # what start-up began, for the stop to end
    stopping = asyncio.Event()  # a SIGTERM while consumers still join runs the stop first

    @asynccontextmanager
    async def policy(w: Wiring) -> AsyncIterator[Inbox]:
        clients = make_client_publisher(w.settings, client_id="coordinator")
        await clients.connect()
        store = CoordinatorStore(w.pool, f"{w.settings.topic_prefix}.coordinator")
        operations = Operations(store, w.broker, w.settings, w.metrics, actor=ACTOR, clients=clients)
        running.update(store=store, operations=operations, sync=SyncMonitor(**vars(w), store=store, operations=operations))
        try:
            yield Inbox(**vars(w), store=store, operations=operations)
        finally:
            await clients.stop()

    app, wiring = service_app(Stage.COORDINATOR, routes, policy, settings=settings)
    settings = wiring.settings

    @app.after_startup
    async def start_rounds() -> None:
        if stopping.is_set():
            return
        store, operations, sync = running["store"], running["operations"], running["sync"]
        assert settings.database_url
        leader = running["leader"] = Lease(settings.database_url, named(settings.topic_prefix, "coordinator.leader"))
        running["monitor"] = start_periodic("sync monitor", settings.sync_poll_interval_s, lambda: sync.lead(leader))
        running["gauges"] = start_periodic("gauges", GAUGE_INTERVAL_S, lambda: sync.observe_if_leader(leader))
        running["outbox"] = start_periodic("outbox", OUTBOX_INTERVAL_S, operations.drain)  # what a stopped replica left
        try:
            await operations.resume()  # a cutover interrupted by a restart goes on from its next step
        except asyncpg.InterfaceError:
            if stopping.is_set():  # stopped meanwhile: the next start resumes it
                return
            raise
        if settings.api_port:
            running["api"] = await serve(
                make_api(store, operations.handle, settings.api_token), settings.api_host, settings.api_port
            )

    @app.on_shutdown
    async def stop_rounds() -> None:
        stopping.set()
        if (api := running.get("api")) is not None:
            await api.cleanup()
        for name in ("monitor", "gauges", "outbox"):
            if (task := running.get(name)) is not None:
                await stop_periodic(task)
        if (leader := running.get("leader")) is not None:
            await leader.release()
        if (operations := running.get("operations")) is not None:
            for cutover in list(operations.running.values()):  # resumed from their last step at the next start
                cutover.cancel()

    report_readiness(app)  # last: ready once every start-up hook above has run
    return app
