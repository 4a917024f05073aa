"""Loader service wiring: rows.<domain> and quarantine batches in; PostgreSQL out.

One consumer poll (up to ``batch_size`` batch messages, from any rows topic) is written in
one transaction, record by record in the ledger.

Offsets are committed only after the batch's transaction commits (``NACK_ON_ERROR``:
an exception rewinds the consumer instead of skipping).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Annotated

from faststream import Context, FastStream

from services.loader.writer import Writer
from shared.barrier import acknowledge
from shared.batching import decode_all
from shared.kafka import consumer_options, make_broker, raw_bodies
from shared.messages import Barrier, QuarantineBatch, QuarantinedRecord, RowsBatch
from shared.service import prepare
from shared.settings import Settings
from shared.telemetry import setup_telemetry
from shared.topics import Topics

log = logging.getLogger("schoolmig.loader")

settings = Settings()
topics = Topics.from_settings(settings)
broker = make_broker(settings, client_id="loader")
app = FastStream(broker)
metrics = setup_telemetry("loader", settings.metrics_port, settings.metrics_host)

WriterDep = Annotated[Writer, Context("writer")]


@app.on_startup
async def start() -> None:
    app.context.set_global("writer", Writer(await prepare(settings, "loader", pool_size=4)))


@app.on_shutdown
async def stop(writer: WriterDep) -> None:
    await writer.pool.close()


def _count_quarantined(records: list[QuarantinedRecord]) -> None:
    for (school_id, domain, stage, reason), n in Counter(
        (r.school_id, r.domain.value, r.stage.value, r.reason) for r in records
    ).items():
        metrics.records_quarantined.add(n, {"school_id": school_id, "domain": domain, "stage": stage, "reason": reason})


@broker.subscriber(
    *topics.rows_topics, **consumer_options(settings, "schoolmig-loader", batch=True), decoder=raw_bodies
)
async def on_rows(bodies: list[bytes], writer: WriterDep) -> None:
    messages = decode_all(bodies)
    records = [r for m in messages if isinstance(m, RowsBatch) for r in m.records()]
    refused = {(r.school_id, r.snapshot_id, r.domain, r.index): r for r in await writer.load(records)}
    loaded = Counter(
        (r.school_id, r.domain.value) for r in records if (r.school_id, r.snapshot_id, r.domain, r.index) not in refused
    )
    for (school_id, domain), n in loaded.items():
        metrics.records_loaded.add(n, {"school_id": school_id, "domain": domain})
    _count_quarantined(list(refused.values()))
    # The batch is committed: every barrier in it is passed (whatever preceded it is written).
    await acknowledge(writer.pool, [m for m in messages if isinstance(m, Barrier)], "loader")


@broker.subscriber(
    topics.quarantine, **consumer_options(settings, "schoolmig-loader-quarantine", batch=True), decoder=raw_bodies
)
async def on_quarantine(bodies: list[bytes], writer: WriterDep) -> None:
    messages = decode_all(bodies)
    records = [r for m in messages if isinstance(m, QuarantineBatch) for r in m.entries]
    await writer.quarantine(records)
    _count_quarantined(records)
    await acknowledge(writer.pool, [m for m in messages if isinstance(m, Barrier)], "loader")
