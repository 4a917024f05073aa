"""Loader service wiring: rows.<domain> and quarantine batches in; PostgreSQL out.

One consumer reads every rows topic; one poll (up to ``batch_size`` batch messages) is
written in one transaction, record by record in the ledger. A message that is not a batch
this topic carries goes to the dead letter with its reason (never skipped, never looped on).

Offsets are committed only after the batch's transaction commits (``NACK_ON_ERROR``:
an exception rewinds the consumer instead of skipping).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Annotated, Any

from faststream import Context, FastStream
from faststream.kafka import KafkaMessage

from services.loader.deferral import Position, Split, WaitClock, split
from services.loader.writer import Writer
from shared.failures.deadletters import reject
from shared.platform.kafka import consumer_options, hold, make_broker, raw_bodies
from shared.platform.logs import setup_logging
from shared.platform.service import prepare, report_readiness
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.telemetry import setup_telemetry
from shared.platform.topics import Topics
from shared.wire.barrier import acknowledge
from shared.wire.batching import Unusable, read_signed
from shared.wire.messages import Barrier, MappedRecord, QuarantineBatch, QuarantinedRecord, RowsBatch

log = logging.getLogger("schoolmig.loader")

settings = Settings()
setup_logging("loader", settings.log_level, settings.log_format)  # first: FastStream logs from its start
topics = Topics.from_settings(settings)
keyring = Keyring.for_service(settings)
broker = make_broker(settings, client_id="loader")
app = FastStream(broker)
metrics = setup_telemetry("loader", settings.metrics_port, settings.metrics_host)

WriterDep = Annotated[Writer, Context("writer")]
clock = WaitClock(settings.parent_wait_s)


@app.on_startup
async def start() -> None:
    keyring.require()
    app.context.set_global("writer", Writer(await prepare(settings, "loader", pool_size=8)))


@app.on_shutdown
async def stop(writer: WriterDep) -> None:
    await writer.pool.close()


def _count_quarantined(records: list[QuarantinedRecord]) -> None:
    for (school_id, domain, stage, reason), n in Counter(
        (r.school_id, r.domain.value, r.stage.value, r.reason) for r in records
    ).items():
        metrics.records_quarantined.add(n, {"school_id": school_id, "domain": domain, "stage": stage, "reason": reason})


@broker.subscriber(*topics.rows_topics, **consumer_options(settings, "schoolmig-loader", batch=True), decoder=raw_bodies)
async def on_rows(bodies: list[bytes], message: KafkaMessage, writer: WriterDep) -> None:
    sources = message.raw_message
    positions = [Position(r.topic, r.partition, r.offset) for r in sources]
    messages = [read_signed(source, body, keyring, RowsBatch) for source, body in zip(sources, bodies, strict=True)]
    groups = [m.records() if isinstance(m, RowsBatch) else [] for m in messages]
    plan = await plan_poll(writer, positions, groups)
    records = [r for i in plan.now for r in groups[i]]
    refused = {(r.school_id, r.snapshot_id, r.domain, r.index): r for r in await writer.load(records)}
    loaded = Counter(
        (r.school_id, r.domain.value) for r in records if (r.school_id, r.snapshot_id, r.domain, r.index) not in refused
    )
    for (school_id, domain), n in loaded.items():
        metrics.records_loaded.add(n, {"school_id": school_id, "domain": domain})
    for outcome, n in writer.tally.items():
        metrics.changes_applied.add(n, {"outcome": outcome})
    _count_quarantined(list(refused.values()))
    for i in plan.now:
        if isinstance(unusable := messages[i], Unusable):
            await reject(broker, topics.deadletter, sources[i], bodies[i], unusable, where="loader")
    # Committed: every barrier handled now is passed (whatever preceded it is written).
    await acknowledge(writer.pool, [m for i in plan.now if isinstance(m := messages[i], Barrier)], "loader")
    if plan.rewind:
        wait_for_parents(message.consumer, plan.rewind)


async def plan_poll(writer: Writer, positions: list[Position], groups: list[list[MappedRecord]]) -> Split:
    """Which messages wait for parents on their way (``deferral.py``). Judged again with only
    what is written now as given, until nothing changes: a child whose parent sits in a
    message that waits must wait too, or it would be parked."""
    now = time.monotonic()
    clock.expire(now)
    waiting: set[int] = set()
    plan = split(positions, waiting)
    for _ in range(3):
        view = [groups[i] if i in plan.now else [] for i in range(len(groups))]
        found = await writer.parents_on_their_way(view)
        more = {i for i, awaited in found.items() if clock.may_wait(awaited, now)} - waiting
        if not more:
            break
        waiting |= more
        plan = split(positions, waiting)
    return plan


def wait_for_parents(consumer: Any, rewind: dict[tuple[str, int], int]) -> None:
    """Deliver these partitions again from the given offsets, after a pause (the commit that
    follows stops there): their messages wait for parents still on their way."""
    hold(consumer, rewind, settings.parent_pause_s)
    log.debug("%d partition(s) wait for parents on their way", len(rewind))


@broker.subscriber(topics.quarantine, **consumer_options(settings, "schoolmig-loader-quarantine", batch=True), decoder=raw_bodies)
async def on_quarantine(bodies: list[bytes], message: KafkaMessage, writer: WriterDep) -> None:
    messages = [
        read_signed(source, body, keyring, QuarantineBatch) for source, body in zip(message.raw_message, bodies, strict=True)
    ]
    records = [r for m in messages if isinstance(m, QuarantineBatch) for r in m.entries]
    await writer.quarantine(records)
    _count_quarantined(records)
    for source, body, m in zip(message.raw_message, bodies, messages, strict=True):
        if isinstance(m, Unusable):
            await reject(broker, topics.deadletter, source, body, m, where="loader")
    await acknowledge(writer.pool, [m for m in messages if isinstance(m, Barrier)], "loader")


report_readiness(app)  # last: ready once every start-up hook above has run
