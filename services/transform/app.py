"""Transform service wiring: raw.<domain> in (batches); rows.<domain> or quarantine out.

Offsets are committed only after every output of the batch is acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import logging

from faststream import FastStream

from shared.barrier import forward, partition_counts
from shared.domains import Domain
from shared.kafka import consumer_options, ensure_topics, make_broker
from shared.logs import setup_logging
from shared.mapping.records import transform
from shared.messages import Barrier, QuarantinedRecord, RawRecord
from shared.settings import Settings
from shared.telemetry import setup_telemetry
from shared.topics import Topics, record_key

log = logging.getLogger("schoolmig.transform")

settings = Settings()
topics = Topics.from_settings(settings)
broker = make_broker(settings, client_id="transform")
app = FastStream(broker)
metrics = setup_telemetry("transform", settings.metrics_port, settings.metrics_host)


@app.on_startup
async def start() -> None:
    setup_logging("transform", settings.log_level)
    await ensure_topics(settings)


@broker.subscriber(*topics.raw_topics, **consumer_options(settings, "schoolmig-transform", batch=True))
async def on_raw(messages: list[Barrier | RawRecord]) -> None:
    pending = []
    for raw in messages:
        if isinstance(raw, Barrier):  # everything before it is published first, then the barrier goes on
            await asyncio.gather(*pending)
            pending.clear()
            await forward_barrier(raw)
            continue
        out = transform(raw)
        key = record_key(raw.school_id, raw.domain, raw.legacy_id, raw.index)
        if isinstance(out, QuarantinedRecord):
            topic = topics.quarantine  # counted where it is stored, by the loader
        else:
            topic = topics.rows(raw.domain)
            metrics.records_mapped.add(1, {"school_id": raw.school_id, "domain": raw.domain.value})
        pending.append(await broker.publish(out, topic, key=key, no_confirm=True))
    await asyncio.gather(*pending)


async def forward_barrier(barrier: Barrier) -> None:
    domain = next(d for d in Domain if topics.raw(d) == barrier.topic)
    targets = [topics.rows(domain), topics.quarantine]
    assert settings.kafka_bootstrap_servers
    await forward(broker, barrier, targets, await partition_counts(settings.kafka_bootstrap_servers, targets))
