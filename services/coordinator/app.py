"""Coordinator service wiring: lifecycle events and operator commands in; phase moves,
validation commands, modes, outcomes and reports out; the HTTP API beside them.

Built at start-up by :func:`create_app`. What comes in is ``services.coordinator.inbox``;
the leader's rounds (sync checks, re-drives, outcomes) are ``services.coordinator.sync``;
what the coordinator does to a school (advance, cutover, rollback, …) is
``services.coordinator.operations``, the cutover's steps ``services.coordinator.cutover``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from faststream import Context, ContextRepo, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.coordinator.http import make_api, serve
from services.coordinator.inbox import Inbox
from services.coordinator.operations import Operations
from services.coordinator.store import CoordinatorStore
from services.coordinator.sync import ACTOR, SyncMonitor
from shared.failures.guard import guarded_broker
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, make_client_publisher, raw_body
from shared.platform.leases import Lease, named
from shared.platform.logs import setup_logging
from shared.platform.service import prepare, report_readiness, start_periodic, stop_periodic
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.telemetry import setup_telemetry
from shared.platform.topics import Topics

OUTBOX_INTERVAL_S = 1.0
GAUGE_INTERVAL_S = 5.0  # progress and lag: a scrape-friendly cadence, light on the database
InboxDep = Annotated[Inbox, Context("inbox")]


def routes(settings: Settings) -> KafkaRouter:
    topics = Topics.from_settings(settings)
    router = KafkaRouter()

    @router.subscriber(topics.operator_commands, **consumer_options(settings, "schoolmig-coordinator-commands"), decoder=raw_body)
    async def on_command(body: bytes, message: KafkaMessage, inbox: InboxDep) -> None:
        await inbox.on_command(body, message)

    @router.subscriber(topics.events, **consumer_options(settings, "schoolmig-coordinator"), decoder=raw_body)
    async def on_event(body: bytes, message: KafkaMessage, inbox: InboxDep) -> None:
        await inbox.on_event(body, message)

    return router


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    setup_logging("coordinator", settings.log_level, settings.log_format)  # first: FastStream logs from its start
    keyring = Keyring.for_service(settings)
    broker, letters = guarded_broker(settings, Stage.COORDINATOR)
    broker.include_router(routes(settings))
    clients = make_client_publisher(settings, client_id="coordinator")
    metrics = setup_telemetry("coordinator", settings.metrics_port, settings.metrics_host)
    running: dict[str, Any] = {}  # what start-up began, for the stop to end
    stopping = asyncio.Event()  # a SIGTERM while consumers still join runs the stop first

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        keyring.require()
        store = CoordinatorStore(await prepare(settings, "coordinator"))
        await clients.connect()
        operations = Operations(store, broker, settings, metrics, actor=ACTOR, clients=clients)
        running.update(store=store, operations=operations, sync=SyncMonitor(store, operations, settings, metrics))
        context.set_global("inbox", Inbox(store, operations, settings, keyring, letters, metrics))
        try:
            yield
        finally:
            await clients.stop()
            await letters.close()
            await store.pool.close()

    app = FastStream(broker, lifespan=lifespan)

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
            api = make_api(store, operations.handle, settings.api_token)
            running["api"] = await serve(api, settings.api_host, settings.api_port)

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
