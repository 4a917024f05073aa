"""Ingest service wiring: the public ingest topic in; raw, quarantine, events, outcomes and
dead letter out.

Built at start-up by :func:`create_app`. What comes in is ``services.ingest.intake``; what
goes out, a snapshot's release or re-drive, is ``services.ingest.release``; a monitor (one
replica at a time, under a lease) reports snapshots still missing parts after the timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, ContextRepo, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.ingest.intake import Intake
from services.ingest.release import Release
from services.ingest.store import IngestStore
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

IntakeDep = Annotated[Intake, Context("intake")]
OUTBOX_INTERVAL_S = 1.0


def routes(settings: Settings) -> KafkaRouter:
    router = KafkaRouter()

    @router.subscriber(
        Topics.from_settings(settings).ingest,
        **consumer_options(settings, "schoolmig-ingest"),
        decoder=raw_body,
        title="schoolmig.ingest:Snapshot",
        description="Snapshot manifests and chunks from any client; see docs/asyncapi.yaml for the envelopes.",
    )
    async def on_ingest(body: bytes, message: KafkaMessage, intake: IntakeDep) -> None:
        await intake.take(body, message)

    return router


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    setup_logging("ingest", settings.log_level, settings.log_format)  # first: FastStream logs from its start
    keyring = Keyring.for_service(settings)
    broker, letters = guarded_broker(settings, Stage.INGEST)
    broker.include_router(routes(settings))
    clients = make_client_publisher(settings, client_id="ingest")  # the outcomes topic: stock clients read it
    metrics = setup_telemetry("ingest", settings.metrics_port, settings.metrics_host)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        keyring.require()
        store = IngestStore(await prepare(settings, "ingest"))
        await clients.connect()
        release = Release(store, settings, keyring, broker, clients, letters, metrics)
        context.set_global("intake", Intake(release))
        assert settings.database_url
        lease = Lease(settings.database_url, named(settings.topic_prefix, "ingest.overdue"))  # once, whoever holds it

        async def report_if_held() -> None:
            if await lease.held():
                await release.report_overdue()

        interval = min(30.0, max(0.5, settings.incomplete_snapshot_timeout_s / 4))
        monitor = start_periodic("overdue snapshots", interval, report_if_held)
        drainer = start_periodic("outbox", OUTBOX_INTERVAL_S, release.drain)  # what a stopped replica left
        try:
            yield
        finally:
            await stop_periodic(drainer)
            await stop_periodic(monitor)
            await lease.release()
            await clients.stop()
            await letters.close()
            await store.pool.close()

    app = FastStream(broker, lifespan=lifespan)
    report_readiness(app)  # last: ready once every start-up hook above has run
    return app
