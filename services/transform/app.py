"""Transform service wiring: raw.<domain> batches in; rows.<domain> and quarantine batches out.

Each raw batch maps record by record (``services.transform.records.transform_batch``) into one
rows message and, where records cannot be migrated, one quarantine message (more only when
a bound of ``shared.wire.batching`` is reached). Offsets are committed only after every output
of the consumer batch is acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaMessage

from services.transform.records import transform_batch
from shared.catalog.domains import Domain
from shared.failures.deadletters import dead_letter, reject
from shared.platform.kafka import consumer_options, ensure_topics, make_broker, raw_bodies
from shared.platform.logs import setup_logging
from shared.platform.service import report_readiness, watch_topics
from shared.platform.settings import Settings
from shared.platform.signing import Keyring, publish
from shared.platform.telemetry import count_error, setup_telemetry
from shared.platform.topics import Topics, batch_key
from shared.wire.barrier import forward, partition_counts
from shared.wire.batching import Unusable, header, pack, read_signed
from shared.wire.messages import Barrier, RawBatch

log = logging.getLogger("schoolmig.transform")

settings = Settings()
setup_logging("transform", settings.log_level, settings.log_format)  # first: FastStream logs from its start
topics = Topics.from_settings(settings)
keyring = Keyring.for_service(settings)
broker = make_broker(settings, client_id="transform")
app = FastStream(broker)
metrics = setup_telemetry("transform", settings.metrics_port, settings.metrics_host)


@app.on_startup
async def start() -> None:
    keyring.require()
    await ensure_topics(settings)
    watch_topics(settings)


@broker.subscriber(*topics.raw_topics, **consumer_options(settings, "schoolmig-transform", batch=True), decoder=raw_bodies)
async def on_raw(bodies: list[bytes], message: KafkaMessage) -> None:
    pending: list[Any] = []
    for source, body in zip(message.raw_message, bodies, strict=True):
        batch = read_signed(source, body, keyring, RawBatch)
        if isinstance(batch, Barrier):  # everything before it is published first, then the barrier goes on
            await asyncio.gather(*pending)
            pending.clear()
            await forward_barrier(batch)
        elif isinstance(batch, Unusable):  # not what this topic carries: kept with the reason, never looped on
            await reject(broker, topics.deadletter, source, body, batch, where="transform")
        else:
            assert isinstance(batch, RawBatch)
            try:
                produced = outputs(batch)
            except Exception as exc:  # pure code, so this message's own fault: the others go on
                await dead_letter(
                    broker,
                    topics.deadletter,
                    source,
                    body,
                    "handler_failed",
                    f"transform raised {type(exc).__name__} on this batch",
                    error_class=type(exc).__name__,
                )
                count_error("input", "transform: handler_failed")
                continue
            pending += [await publish(broker, keyring, out, topic, key=key, no_confirm=True) for out, topic, key in produced]
    await asyncio.gather(*pending)


def outputs(batch: RawBatch) -> list[tuple[bytes, str, bytes]]:
    """The messages one raw batch becomes: (body, topic, key)."""
    done = transform_batch(batch)
    key = batch_key(batch.school_id, batch.domain)
    limits = {"max_records": settings.batch_records, "max_bytes": settings.batch_bytes}
    rows_head = header("rows.batch", batch.school_id, batch.snapshot_id, batch.domain, batch.source_ts)
    out = [(body, topics.rows(batch.domain), key) for body, _ in pack(rows_head, done.mapped, **limits)]
    quarantine_head = {"kind": "quarantine.batch", "school_id": batch.school_id}
    out += [(body, topics.quarantine, key) for body, _ in pack(quarantine_head, done.quarantined, **limits)]
    if done.mapped:  # counted where they are stored (loaded, or quarantined by the loader)
        metrics.records_mapped.add(len(done.mapped), {"school_id": batch.school_id, "domain": batch.domain.value})
    return out


async def forward_barrier(barrier: Barrier) -> None:
    domain = next(d for d in Domain if topics.raw(d) == barrier.topic)
    targets = [topics.rows(domain), topics.quarantine]
    assert settings.kafka_bootstrap_servers
    await forward(broker, keyring, barrier, targets, await partition_counts(settings.kafka_bootstrap_servers, targets))


report_readiness(app)  # last: ready once every start-up hook above has run
