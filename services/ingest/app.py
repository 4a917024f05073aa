"""Ingest service wiring: the public ingest topic in; raw, quarantine, events, outcomes and
dead letter out.

Built at start-up by :func:`create_app` (``shared.service.service_app``). What comes in is
``services.ingest.intake``; what goes out, a snapshot's release or re-drive, is
``services.ingest.release``. Beside the handler: a monitor (one replica at a time, under a
lease) reports snapshots still missing parts after the timeout, and the outbox is drained
every second (what a stopped replica left).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from faststream import Context, FastStream
from faststream.kafka import KafkaMessage, KafkaRouter

from services.ingest.intake import Intake
from services.ingest.release import Release
from services.ingest.store import IngestStore
from shared.failures.policy import Stage
from shared.platform.kafka import consumer_options, make_client_publisher, raw_body
from shared.platform.leases import Lease, named
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.service import Wiring, report_readiness, service_app, start_periodic, stop_periodic

Policy = Annotated[Intake, Context("policy")]
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
    async def on_ingest(body: bytes, message: KafkaMessage, intake: Policy) -> None:
        await intake.take(body, message)

    return router


@asynccontextmanager
async def policy(w: Wiring) -> AsyncIterator[Intake]:
    clients = make_client_publisher(w.settings, client_id="ingest")  # the outcomes topic: stock clients read it
    await clients.connect()
    release = Release(IngestStore(w.pool), w.settings, w.keyring, w.broker, clients, w.letters, w.metrics)
    assert w.settings.database_url
    lease = Lease(w.settings.database_url, named(w.settings.topic_prefix, "ingest.overdue"))  # once, whoever holds it

    async def report_if_held() -> None:
        if await lease.held():
            await release.report_overdue()

    interval = min(30.0, max(0.5, w.settings.incomplete_snapshot_timeout_s / 4))
    rounds = [
        start_periodic("overdue snapshots", interval, report_if_held),
        start_periodic("outbox", OUTBOX_INTERVAL_S, release.drain),
    ]
    try:
        yield Intake(release)
    finally:
        for task in rounds:
            await stop_periodic(task)
        await lease.release()
        await clients.stop()


def create_app(settings: Settings | None = None) -> FastStream:
    app, _ = service_app(Stage.INGEST, routes, policy, settings=settings)
    report_readiness(app)  # last: ready once every start-up hook has run
    return app
