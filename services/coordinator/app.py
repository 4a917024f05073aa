"""Coordinator service wiring: lifecycle events in; phase moves, validation commands and
reports out.

A snapshot released by ingest takes a school through audited and backed_up (each on its
evidence) to ``dual_write``. A sync monitor then checks, every poll interval, whether
every source record is loaded or quarantined; when so, the school is ``synced`` and the
validator is asked. Its verdict moves the school to ``validated`` (no critical issue) or
leaves it ``synced``; either way the report is written and announced.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated

from faststream import Context, FastStream

from services.coordinator.phases import IllegalTransition, Phase, steps_for_snapshot
from services.coordinator.store import CoordinatorStore
from shared.accounting import quarantine_entries, record_counts
from shared.kafka import consumer_options, make_broker
from shared.messages import (
    Event,
    ReportReady,
    SnapshotReleased,
    ValidationCompleted,
    ValidationRequested,
)
from shared.report import school_report
from shared.service import prepare, start_periodic, stop_periodic
from shared.settings import Settings
from shared.telemetry import setup_telemetry
from shared.topics import Topics

log = logging.getLogger("schoolmig.coordinator")
ACTOR = "coordinator"

settings = Settings()
topics = Topics.from_settings(settings)
broker = make_broker(settings, client_id="coordinator")
app = FastStream(broker)
setup_telemetry("coordinator", settings.metrics_port, settings.metrics_host)

Store = Annotated[CoordinatorStore, Context("store")]


@app.on_startup
async def start() -> None:
    app.context.set_global("store", CoordinatorStore(await prepare(settings, "coordinator")))


@app.after_startup
async def start_monitor(store: Store) -> None:
    monitor = start_periodic("sync monitor", settings.sync_poll_interval_s, lambda: check_syncing(store))
    app.context.set_global("monitor", monitor)


@app.on_shutdown
async def stop(store: Store, monitor: Annotated[asyncio.Task[None], Context("monitor")]) -> None:
    await stop_periodic(monitor)
    await store.pool.close()


@broker.subscriber(topics.events, **consumer_options(settings, "schoolmig-coordinator"))
async def on_event(event: Event, store: Store) -> None:
    if isinstance(event, SnapshotReleased):
        await on_snapshot(event, store)
    elif isinstance(event, ValidationCompleted):
        await on_validation(event, store)


async def on_snapshot(event: SnapshotReleased, store: CoordinatorStore) -> None:
    current, _ = await store.phase_of(event.school_id)
    steps = steps_for_snapshot(current, event)
    if current is Phase.DUAL_WRITE:
        await store.set_snapshot(event.school_id, event.snapshot_id)
        log.info("%s: now syncing snapshot %s", event.school_id, event.snapshot_id)
    elif not steps:
        log.warning("%s: snapshot %s ignored in phase %s", event.school_id, event.snapshot_id, current)
    for phase, reason in steps:
        await store.transition(event.school_id, event.snapshot_id, phase, actor=ACTOR, reason=reason)
        log.info("%s: -> %s", event.school_id, phase.value)


async def check_sync(store: CoordinatorStore, school_id: str, snapshot_id: str) -> bool:
    """Move a school to ``synced`` and ask for validation when every record is accounted for."""
    counts = await record_counts(store.pool, school_id, snapshot_id)
    if counts is None or not all(c.accounted for c in counts.values()):
        return False
    orphans = await store.quarantine_orphans(school_id, snapshot_id)
    loaded = sum(c.loaded for c in counts.values())
    quarantined = sum(c.quarantined + c.parked for c in counts.values())
    try:
        await store.transition(
            school_id, snapshot_id, Phase.SYNCED, actor=ACTOR, expect=Phase.DUAL_WRITE,
            reason=f"every source record accounted for: {loaded} loaded, {quarantined} quarantined "
            f"({orphans} of them orphans whose parent never arrived)",
        )  # fmt: skip
    except IllegalTransition:
        return False
    run_id = str(uuid.uuid4())
    await store.new_validation_run(run_id, school_id, snapshot_id)
    await broker.publish(
        ValidationRequested(run_id=run_id, school_id=school_id, snapshot_id=snapshot_id),
        topics.validate_commands, key=school_id.encode(),
    )  # fmt: skip
    log.info("%s: synced; validation %s requested", school_id, run_id)
    return True


async def check_syncing(store: CoordinatorStore) -> None:
    for school_id, snapshot_id in await store.syncing():
        await check_sync(store, school_id, snapshot_id)


async def on_validation(event: ValidationCompleted, store: CoordinatorStore) -> None:
    current, snapshot_id = await store.phase_of(event.school_id)
    if snapshot_id != event.snapshot_id or current is not Phase.SYNCED:
        log.info("%s: validation %s is for an older state; ignored", event.school_id, event.run_id)
        return
    if event.ok:
        await store.transition(
            event.school_id, event.snapshot_id, Phase.VALIDATED, actor=ACTOR,
            reason=f"validation {event.run_id} found no critical issue",
        )  # fmt: skip
        current = Phase.VALIDATED
    counts = await record_counts(store.pool, event.school_id, event.snapshot_id) or {}
    report = school_report(
        school_id=event.school_id, snapshot_id=event.snapshot_id, phase=current.value, counts=counts,
        quarantine=await quarantine_entries(store.pool, event.school_id, event.snapshot_id),
        validation=event.model_dump(mode="json"),
    )  # fmt: skip
    await store.save_report(event.school_id, event.snapshot_id, report)
    await broker.publish(
        ReportReady(school_id=event.school_id, snapshot_id=event.snapshot_id, phase=current.value),
        topics.events, key=event.school_id.encode(),
    )  # fmt: skip
    log.info("%s: report ready (%s)", event.school_id, current.value)
