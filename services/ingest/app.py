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
from typing import Annotated, Any

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


def create_app(settings: Settings | None = None) -> FastStream:
    running: dict[str, Any] = {}  # what start-up began, for the stop to end

    @asynccontextmanager
    async def policy(w: Wiring) -> AsyncIterator[Intake]:
        clients = make_client_publisher(w.settings, client_id="ingest")  # the outcomes topic: stock clients read it
        await clients.connect()
        release = running["release"] = Release(
            **vars(w), store=IngestStore(w.pool, f"{w.settings.topic_prefix}.ingest"), clients=clients
        )
        try:
            yield Intake(**vars(release), release=release)
        finally:
            await clients.stop()

    app, wiring = service_app(Stage.INGEST, routes, policy, settings=settings)
    settings = wiring.settings

    @app.after_startup
    async def start_rounds() -> None:  # once the broker runs: they publish
        release = running["release"]
        assert settings.database_url
        lease = running["lease"] = Lease(settings.database_url, named(settings.topic_prefix, "ingest.overdue"))

        async def report_if_held() -> None:  # once, whoever holds the lease
            if await lease.held():
                await release.report_overdue()

        interval = min(30.0, max(0.5, settings.incomplete_snapshot_timeout_s / 4))
        running["rounds"] = [
            start_periodic("overdue snapshots", interval, report_if_held),
            start_periodic("outbox", OUTBOX_INTERVAL_S, release.drain),  # what a stopped replica left
        ]

    @app.on_shutdown
    async def stop_rounds() -> None:  # before the broker stops
        for task in running.get("rounds", []):
            await stop_periodic(task)
        if (lease := running.get("lease")) is not None:
            await lease.release()

    report_readiness(app)  # last: ready once every start-up hook above has run
    return app
