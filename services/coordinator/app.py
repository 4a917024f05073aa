"""Coordinator service wiring: lifecycle events in; phase moves, validation commands and
reports out.

A snapshot released by ingest takes a school through audited and backed_up (each on its
evidence) to ``dual_write``. A sync monitor then checks, every poll interval, whether
every source record is loaded or quarantined; when so, records still parked are settled
(quarantined as orphans, or re-driven to the loader when their parents are in the tables
after all), the school is ``synced`` and the validator is asked. Its verdict moves the school to ``validated`` (no critical issue) or
leaves it ``synced``; either way the report is written and announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from aiohttp import web
from faststream import Context, FastStream
from faststream.kafka import KafkaMessage
from pydantic import TypeAdapter, ValidationError

from services.coordinator.http import make_api, serve
from services.coordinator.lag import consumer_groups, consumer_lag
from services.coordinator.operations import Operations, gauge_phase
from services.coordinator.phases import IllegalTransition, Phase
from services.coordinator.store import CoordinatorStore
from shared.catalog.domains import Domain
from shared.failures.deadletters import dead_letter, reject
from shared.ledger.accounting import DomainCounts, progress, record_counts, record_counts_many
from shared.platform.kafka import consumer_options, make_broker, make_client_publisher, raw_body
from shared.platform.leases import Lease, named
from shared.platform.logs import setup_logging
from shared.platform.service import prepare, report_readiness, start_periodic, stop_periodic
from shared.platform.settings import Settings
from shared.platform.signing import OPERATOR_PREFIX, SERVICE, Keyring, stale_age
from shared.platform.telemetry import setup_telemetry
from shared.platform.topics import Topics
from shared.wire.batching import Unusable, signed_by
from shared.wire.messages import (
    CHANGE_ID_PREFIX,
    Event,
    OperatorCommand,
    SchoolRejected,
    SnapshotIncomplete,
    SnapshotReleased,
    SnapshotWithheld,
    ValidationCompleted,
    error_summary,
)

log = logging.getLogger("schoolmig.coordinator")
ACTOR = "coordinator"
COMMAND_CLOCK_SKEW_S = 60.0  # a command "from the future" by more than this is refused too
GAUGE_INTERVAL_S = 5.0  # progress and lag: a scrape-friendly cadence, light on the database

settings = Settings()
setup_logging("coordinator", settings.log_level, settings.log_format)  # first: FastStream logs from its start
topics = Topics.from_settings(settings)
keyring = Keyring.for_service(settings)
broker = make_broker(settings, client_id="coordinator")
app = FastStream(broker)
metrics = setup_telemetry("coordinator", settings.metrics_port, settings.metrics_host)

OPERATOR_COMMAND: TypeAdapter[OperatorCommand] = TypeAdapter(OperatorCommand)
EVENT: TypeAdapter[Event] = TypeAdapter(Event)
Store = Annotated[CoordinatorStore, Context("store")]
Ops = Annotated[Operations, Context("operations")]


@app.on_startup
async def start() -> None:
    keyring.require()
    store = CoordinatorStore(await prepare(settings, "coordinator"))
    app.context.set_global("store", store)
    clients = make_client_publisher(settings, client_id="coordinator")
    await clients.connect()
    app.context.set_global("operations", Operations(store, broker, settings, metrics, actor=ACTOR, clients=clients))


# Consumers may still be joining their groups when a SIGTERM comes: then the stop hook runs
# first, and what start-up would begin must not touch the closed pool.
_stopping = asyncio.Event()


@app.after_startup
async def start_monitor(store: Store, operations: Ops) -> None:
    if _stopping.is_set():
        return
    assert settings.database_url
    leader = Lease(settings.database_url, named(settings.topic_prefix, "coordinator.leader"))
    app.context.set_global("leader", leader)
    monitor = start_periodic("sync monitor", settings.sync_poll_interval_s, lambda: lead(leader, store, operations))
    app.context.set_global("monitor", monitor)
    app.context.set_global("gauges", start_periodic("gauges", GAUGE_INTERVAL_S, lambda: observe_if_leader(leader, store)))
    try:
        await operations.resume()  # a cutover interrupted by a restart goes on from its next step
    except asyncpg.InterfaceError:
        if _stopping.is_set():  # stopped meanwhile: the next start resumes it
            return
        raise
    api = (
        await serve(make_api(store, operations.handle, settings.api_token), settings.api_host, settings.api_port)
        if settings.api_port
        else None
    )
    app.context.set_global("api", api)


# Set after start-up; a stop that comes first (SIGTERM while consumers still join) finds None.
Monitor = Annotated[asyncio.Task[None] | None, Context("monitor", default=None)]


@app.on_shutdown
async def stop(
    store: Store,
    operations: Ops,
    monitor: Monitor,
    gauges: Annotated[asyncio.Task[None] | None, Context("gauges", default=None)],
    api: Annotated[web.AppRunner | None, Context("api", default=None)],
    leader: Annotated[Lease | None, Context("leader", default=None)],
) -> None:
    _stopping.set()
    if api is not None:
        await api.cleanup()
    for task in (monitor, gauges):
        if task is not None:
            await stop_periodic(task)
    if leader is not None:
        await leader.release()
    for cutover in list(operations.running.values()):  # resumed from their last step at the next start
        cutover.cancel()
    if operations.clients is not None:
        await operations.clients.stop()
    await store.pool.close()


@broker.subscriber(topics.operator_commands, **consumer_options(settings, "schoolmig-coordinator-commands"), decoder=raw_body)
async def on_command(body: bytes, message: KafkaMessage, store: Store, operations: Ops) -> None:
    """Acted on only when an operator the coordinator knows signed it (``shared.platform.signing``);
    the actor recorded is that operator, whatever the body says."""
    command = await accepted(message, body, OPERATOR_COMMAND, allowed=(OPERATOR_PREFIX,))
    if command is None:
        return
    assert isinstance(command, OperatorCommand) and isinstance(command.actor, str)
    if (why := replay_refusal(command, await store.command_seen(command.command_id))) is not None:
        await reject(broker, topics.deadletter, message.raw_message, body, Unusable(*why, refused=True))
        return
    outcome = await operations.handle(command)
    await store.command_done(command, outcome)  # after acting: a crash in between acts again (idempotent), never loses it
    log.info("%s: %s by %s: %s", command.school_id, command.action, command.actor, outcome)


def replay_refusal(command: OperatorCommand, seen: bool) -> tuple[str, str] | None:
    """Why a correctly signed command is still not acted on: a replay of one acted on before,
    or one signed too long ago (a captured command kept for later)."""
    if seen:
        return "replayed_command", f"command {command.command_id} was acted on before"
    if (age := stale_age(command.issued_at, settings.command_ttl_s, COMMAND_CLOCK_SKEW_S)) is not None:
        return (
            "stale_command",
            f"signed {age:.0f}s ago; commands are taken for {settings.command_ttl_s:.0f}s (SCHOOLMIG_COMMAND_TTL_S)",
        )
    return None


@broker.subscriber(topics.events, **consumer_options(settings, "schoolmig-coordinator"), decoder=raw_body)
async def on_event(body: bytes, message: KafkaMessage, store: Store, operations: Ops) -> None:
    event = await accepted(message, body, EVENT, allowed=(SERVICE,))
    if isinstance(event, SnapshotReleased):
        await on_snapshot(event, store, operations)
    elif isinstance(event, ValidationCompleted):
        await on_validation(event, store, operations)
    elif isinstance(event, SnapshotWithheld):
        await operations.withheld(event)
    elif isinstance(event, SchoolRejected) and not event.snapshot_id.startswith(CHANGE_ID_PREFIX):
        await operations.not_taken(event.school_id, event.snapshot_id, "refused", event.reason, event.message)
    elif isinstance(event, SnapshotIncomplete):
        missing = "its manifest" if not event.manifest_received else f"chunks {event.missing_chunks}"
        why = f"still missing {missing} after {event.waited_s:.0f}s: not released (publish the missing parts again)"
        await operations.not_taken(event.school_id, event.snapshot_id, "incomplete", "incomplete_snapshot", why)


async def accepted(message: KafkaMessage, body: bytes, adapter: TypeAdapter[Any], *, allowed: tuple[str, ...]) -> Any:
    """The message, if it is signed by an allowed principal and is what the topic carries;
    else None, and it is in the dead letter with the reason (never acted on)."""
    record = message.raw_message
    principal = signed_by(record, body, keyring, allowed=allowed)
    if isinstance(principal, Unusable):
        await reject(broker, topics.deadletter, record, body, principal)
        return None
    try:
        parsed = adapter.validate_json(body)
    except ValidationError as exc:
        await dead_letter(broker, topics.deadletter, record, body, "invalid_internal_message", error_summary(exc))
        return None
    if isinstance(parsed, OperatorCommand):  # the authenticated operator, not what the body claims
        parsed = parsed.model_copy(update={"actor": principal.removeprefix(OPERATOR_PREFIX)})
    return parsed


async def on_snapshot(event: SnapshotReleased, store: CoordinatorStore, operations: Operations) -> None:
    await operations.advance(event)


async def check_sync(
    store: CoordinatorStore, operations: Operations, school_id: str, snapshot_id: str, counts: dict[Domain, DomainCounts] | None
) -> bool:
    """Move a school to ``synced`` and ask for validation when every record is accounted for."""
    if counts is None or not all(c.accounted for c in counts.values()):
        if counts is not None:
            await redrive_if_stuck(operations, school_id, snapshot_id, counts)
        return False
    # Every other device's newest snapshot too (one replaced while it synced is merged, not
    # dropped): its records are part of what is validated, so they must all stand somewhere.
    others = await store.device_snapshots(school_id) - {snapshot_id}
    if others:
        theirs = await record_counts_many(store.pool, [(school_id, other) for other in sorted(others)])
        waiting = False
        for other in sorted(others):
            found = theirs.get((school_id, other))
            if found is None or not all(c.accounted for c in found.values()):
                waiting = True
                if found is not None:
                    await redrive_if_stuck(operations, school_id, other, found)
        if waiting:
            return False
    cut = None
    if await store.has_changes(school_id):
        # Live changes: counts prove the snapshot, not the changes; a barrier proves both (and
        # the sweep after it settles what changes still wait for: orphans before validation).
        cut = await changes_barrier(store, operations, school_id, snapshot_id)
        if cut is None:
            return False
    # Deletions first: a record a device no longer holds lets its unique values go, and a
    # write waiting for one is then re-driven by the sweep, not quarantined.
    if marked := await store.mark_deleted(school_id, snapshot_id):
        log.info("%s: %d record(s) gone from snapshot %s marked deleted", school_id, marked, snapshot_id)
    sweep = await store.sweep_parked(school_id, snapshot_id)
    if sweep.redrive:
        await operations.hand_back(sweep.redrive)
        log.warning("%s: %d parked record(s) whose parents or values are free re-driven", school_id, len(sweep.redrive))
    if sweep.redrive or sweep.pending:
        return False  # synced once they are written
    orphans = sweep.orphans
    settled = await record_counts(store.pool, school_id, snapshot_id) or counts  # the sweep's orphans quarantined
    loaded = sum(c.loaded for c in settled.values())
    quarantined = sum(c.quarantined for c in settled.values())
    try:
        await store.transition(
            school_id,
            snapshot_id,
            Phase.SYNCED,
            actor=ACTOR,
            expect=Phase.DUAL_WRITE,
            reason=f"every source record accounted for: {loaded} loaded, {quarantined} quarantined "
            f"({orphans} of them orphans whose parent never arrived)",
        )
    except IllegalTransition:
        return False
    await operations.phase_changed(school_id, Phase.SYNCED, "synced")
    if (began := await store.entered_at(school_id, Phase.DUAL_WRITE)) is not None:
        seconds = (datetime.now(UTC) - began).total_seconds()
        metrics.sync_duration.record(seconds, {"school_id": school_id})
        metrics.schools.speed[school_id] = round(loaded / max(seconds, 1e-3) * 60, 1)
    run_id = await operations.request_validation(school_id, snapshot_id, cut)
    log.info("%s: synced; validation %s requested", school_id, run_id)
    return True


#: Per school syncing: its counts when they last moved, when, and how many re-drives since
#: (the leader's view; a new leader starts the clock again, which only delays a re-drive).
_progress: dict[tuple[str, str], tuple[tuple[int, ...], float, int]] = {}
MAX_REDRIVES = 5


_lag_moved: list[float] = [0.0, -1.0]  # [when the consumers' total lag last changed, that total]


def _pipeline_busy(now: float) -> bool:
    """Consumers still working through a backlog (their lag moved within the re-drive delay):
    a school may only be slow. A lag that stays put (a consumer group lost with its broker)
    is no reason to wait."""
    total = float(sum(metrics.schools.lag.values()))
    if total != _lag_moved[1]:
        _lag_moved[:] = [now, total]
    return total > 0 and now - _lag_moved[0] < settings.redrive_after_s


async def redrive_if_stuck(operations: Operations, school_id: str, snapshot_id: str, counts: dict[Domain, DomainCounts]) -> None:
    """A school whose counts have not moved for ``SCHOOLMIG_REDRIVE_AFTER_S`` while records are
    missing, with no consumer working through a backlog, lost them in flight (a
    broker lost, topics gone): its snapshot is fanned out again from the verified backup.
    Each further re-drive waits twice as long; after ``MAX_REDRIVES`` it is left to an
    operator (logged, counted as critical)."""
    seen = tuple(n for c in counts.values() for n in (c.loaded, c.quarantined, c.parked))
    now = time.monotonic()
    last = _progress.get((school_id, snapshot_id))
    if last is None or last[0] != seen:
        _progress[(school_id, snapshot_id)] = (seen, now, 0 if last is None else last[2])
        return
    _, since, tries = last
    if now - since <= settings.redrive_after_s * 2**tries or _pipeline_busy(now):
        return
    _progress[(school_id, snapshot_id)] = (seen, now, tries + 1)
    if tries >= MAX_REDRIVES:
        if tries == MAX_REDRIVES:
            log.error("%s: still missing records after %d re-drives: an operator must look (schoolmig status)", school_id, tries)
            metrics.errors.add(1, {"category": "critical", "where": "redrive"})
        return
    await operations.redrive(
        school_id, snapshot_id, ACTOR, f"no record accounted for in {now - since:.0f}s, some still missing (re-drive {tries + 1})"
    )


async def changes_barrier(store: CoordinatorStore, operations: Operations, school_id: str, snapshot_id: str) -> datetime | None:
    """When the barrier that proves this sync was sent, once it passed (everything ingest had
    before it, changes included, is written); None while it travels. Sent here the first time,
    and again if it has not passed within ``SCHOOLMIG_BARRIER_TIMEOUT_S`` (a lost copy)."""
    since = await store.entered_at(school_id, Phase.DUAL_WRITE)
    sent = await store.sync_barrier(school_id, snapshot_id, since)
    if sent is not None and sent.passed:
        return sent.sent_at
    if sent is None or sent.age_s > settings.barrier_timeout_s:
        barrier_id, _ = await operations.send_barrier(school_id, snapshot_id)
        log.info("%s: every record of %s accounted for; barrier %s sent to prove the changes", school_id, snapshot_id, barrier_id)
    return None


#: Schools whose counts one sync round reads at most (the least recently checked first):
#: counting reads every ledger line of a school, and with hundreds of schools in dual write
#: at once (ingest far ahead of the loader) reading them all twice a second cost the
#: database more than the loading did. When each was last checked only orders the rounds.
SYNC_CHECKS_PER_ROUND = 20
_checked_at: dict[tuple[str, str], float] = {}


async def lead(leader: Lease, store: CoordinatorStore, operations: Operations) -> None:
    """What one coordinator does for all, whichever holds the lease: the sync checks, and
    taking up cutovers a coordinator left running (it died, or lost its database)."""
    if await leader.held():
        await catch_up(store, operations)
        await check_syncing(store, operations)
        await operations.resume()
        if time.monotonic() >= _next_outcomes[0]:  # a bounded round of outcome checks: not every poll
            _next_outcomes[0] = time.monotonic() + OUTCOMES_INTERVAL_S
            await operations.announce_outcomes(leader.held)


OUTCOMES_INTERVAL_S = 1.0  # how often clients hear where their changes stand
_next_outcomes = [0.0]


async def catch_up(store: CoordinatorStore, operations: Operations) -> None:
    """Releases whose event never came (lost with a broker) are acted on from the database,
    as the event would have been: the school moves on, and is re-driven if records are missing."""
    for event in await store.unheard_releases(max(10.0, settings.sync_poll_interval_s * 20)):
        log.warning("%s: snapshot %s was released but its event never came; acting on it", event.school_id, event.snapshot_id)
        await operations.advance(event)


async def observe_if_leader(leader: Lease, store: CoordinatorStore) -> None:
    """The school gauges and lag, sampled by the leader only (one series per school, one
    query load); the others report none."""
    if await leader.held():
        await observe(store)
    else:  # one series per school and phase, from the leader only
        metrics.schools.lag.clear()
        metrics.schools.progress.clear()
        metrics.schools.phase.clear()
        metrics.schools.speed.clear()


async def check_syncing(store: CoordinatorStore, operations: Operations) -> None:
    everyone = await store.syncing()
    syncing = sorted(everyone, key=lambda pair: _checked_at.get(pair, 0.0))[:SYNC_CHECKS_PER_ROUND]
    now = time.monotonic()
    for pair in list(_checked_at):
        if pair not in everyone:
            del _checked_at[pair]
    schools = {school_id for school_id, _ in everyone}
    for pair in list(_progress):  # (another device's snapshot of a syncing school is watched too)
        if pair[0] not in schools:
            del _progress[pair]
    _checked_at.update(dict.fromkeys(syncing, now))
    counts = await record_counts_many(store.pool, syncing)  # these schools in one go
    for school_id, snapshot_id in syncing:
        try:
            await check_sync(store, operations, school_id, snapshot_id, counts.get((school_id, snapshot_id)))
        except Exception:  # one school's trouble never holds up the others; its next round retries
            log.exception("%s: sync check failed; retrying next round", school_id)
            metrics.errors.add(1, {"category": "transient", "where": "sync check"})


async def observe(store: CoordinatorStore) -> None:
    """Refresh what the progress, phase and lag gauges report (their callbacks cannot do
    I/O). Phases are also set on every move (``Operations.moved``)."""
    assert settings.kafka_bootstrap_servers
    metrics.schools.lag.update(await consumer_lag(settings.kafka_bootstrap_servers, consumer_groups(topics)))
    schools = await store.schools()
    # Only schools still on their way are counted again: a validated or completed school's
    # progress is 1 (counting every school ever, every 5 s, grew with the database).
    settled = {Phase.VALIDATED.value, Phase.CUTOVER.value, Phase.COMPLETED.value, Phase.ROLLED_BACK.value}
    moving = [(s["school_id"], s["snapshot_id"]) for s in schools if s["snapshot_id"] and s["phase"] not in settled]
    all_counts = await record_counts_many(store.pool, moving)
    for school in schools:
        school_id = school["school_id"]
        gauge_phase(metrics, school_id, Phase(school["phase"]))
        if school["phase"] in settled:  # a rolled-back school keeps the progress it had
            if school["phase"] != Phase.ROLLED_BACK.value:
                metrics.schools.progress[school_id] = 1.0
        elif counts := all_counts.get((school_id, school["snapshot_id"])):
            done, source = progress(counts)
            metrics.schools.progress[school_id] = round(done / source, 4) if source else 1.0


async def on_validation(event: ValidationCompleted, store: CoordinatorStore, operations: Operations) -> None:
    if event.started_at and event.finished_at:
        metrics.validation_duration.record((event.finished_at - event.started_at).total_seconds(), {"school_id": event.school_id})
    current, snapshot_id = await store.phase_of(event.school_id)
    if snapshot_id != event.snapshot_id or current is not Phase.SYNCED:
        log.info("%s: validation %s is for an older state; ignored", event.school_id, event.run_id)
        return
    if event.ok:
        await store.transition(
            event.school_id,
            event.snapshot_id,
            Phase.VALIDATED,
            actor=ACTOR,
            reason=f"validation {event.run_id} found no critical issue",
        )
        current = Phase.VALIDATED
        await operations.phase_changed(event.school_id, current, "validated")
    else:
        critical = sum(1 for d in event.domains for i in d.issues if i.severity == "critical")
        metrics.errors.add(max(critical, 1), {"category": "consistency", "where": "validation"})
    await operations.report(event.school_id, event.snapshot_id, current, validation=event.model_dump(mode="json"))


report_readiness(app)  # last: ready once every start-up hook above has run
