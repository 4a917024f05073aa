"""Ingest service wiring: the public ingest topic in; raw, quarantine, events, dead letter out.

A snapshot is released downstream only when its manifest and every chunk are stored,
the chunks assemble to the announced SHA-256, and the backup copies (PostgreSQL and a
file) are written. Releasing is idempotent: the same snapshot published twice is
released once. A snapshot still missing parts after the timeout is reported, never
half-released. Nothing here crashes on input: every message is handled or dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from faststream import Context, FastStream
from faststream.kafka import KafkaMessage

from services.ingest.audit import Finding, audit_snapshot, summarise, zone_findings
from services.ingest.backup_files import write_backup_file
from services.ingest.changes import change_batches, plan_changes, without
from services.ingest.envelope import Rejection, Sender, read_envelope, sender_of
from services.ingest.store import IngestStore
from shared.catalog.timezones import SchoolZone
from shared.failures.deadletters import correlation_of
from shared.failures.deadletters import dead_letter as shared_dead_letter
from shared.ledger.devices import held_records, readable_domains
from shared.platform.kafka import consumer_options, make_broker, make_client_publisher, raw_body
from shared.platform.leases import Lease, named
from shared.platform.logs import setup_logging
from shared.platform.service import prepare, report_readiness, start_periodic, stop_periodic
from shared.platform.settings import Settings
from shared.platform.signing import Keyring, publish, stale_age
from shared.platform.telemetry import count_refused, setup_telemetry
from shared.platform.topics import Topics
from shared.source.snapshot import ParsedSnapshot, UnreadableSnapshot, parse_snapshot
from shared.wire import chunks
from shared.wire.barrier import forward, partition_counts
from shared.wire.batching import Unusable, encode, signed_by, unreadable
from shared.wire.fanout import Outgoing, WireBatch, audit_summary, fanout_batches, plan_fanout
from shared.wire.messages import (
    AuditCompleted,
    AuditSummary,
    Barrier,
    ChangeBatch,
    FieldError,
    MessageRefused,
    Mode,
    Redrive,
    SchoolRejected,
    Severity,
    SnapshotIncomplete,
    SnapshotManifest,
    SnapshotReleased,
    SnapshotWithheld,
    change_id,
)

log = logging.getLogger("schoolmig.ingest")
AUDIT_EVENT_FINDINGS = 500  # the event carries the first ones; all are in migration.audits
#: Chunks of one index kept before the manifest says which is right (a client resending
#: after a fix is two; a flood of wrong ones is refused, never stored).
MAX_CHUNK_CANDIDATES = 3

settings = Settings()
setup_logging("ingest", settings.log_level, settings.log_format)  # first: FastStream logs from its start
topics = Topics.from_settings(settings)
keyring = Keyring.for_service(settings)
broker = make_broker(settings, client_id="ingest")
clients = make_client_publisher(settings, client_id="ingest")  # the outcomes topic: stock clients read it
app = FastStream(broker)
metrics = setup_telemetry("ingest", settings.metrics_port, settings.metrics_host)

Store = Annotated[IngestStore, Context("store")]


@app.on_startup
async def start() -> None:
    keyring.require()
    app.context.set_global("store", IngestStore(await prepare(settings, "ingest")))
    await clients.connect()


@app.after_startup
async def start_overdue_monitor(store: Store) -> None:
    interval = min(30.0, max(0.5, settings.incomplete_snapshot_timeout_s / 4))
    assert settings.database_url
    lease = Lease(settings.database_url, named(settings.topic_prefix, "ingest.overdue"))  # once, whoever holds it
    app.context.set_global("overdue_lease", lease)
    app.context.set_global("monitor", start_periodic("overdue snapshots", interval, lambda: report_if_held(lease, store)))


@app.on_shutdown
async def stop(
    store: Store,
    monitor: Annotated[asyncio.Task[None] | None, Context("monitor", default=None)],
    lease: Annotated[Lease | None, Context("overdue_lease", default=None)],
) -> None:
    if monitor is not None:  # None: stopped before start-up finished
        await stop_periodic(monitor)
    if lease is not None:
        await lease.release()
    await clients.stop()
    await store.pool.close()


@broker.subscriber(
    topics.ingest,
    **consumer_options(settings, "schoolmig-ingest"),
    decoder=raw_body,
    title="schoolmig.ingest:Snapshot",
    description="Snapshot manifests and chunks from any client; see docs/asyncapi.yaml for the envelopes.",
)
async def on_ingest(body: bytes, message: KafkaMessage, store: Store) -> None:
    if (why := unreadable(message.raw_message)) is not None:
        await dead_letter(message, body, "unreadable_record", why)
        return
    if b'"barrier"' in body[:64] and (barrier := _barrier(body)) is not None:
        # Only the coordinator's (signed) barriers count: a forged one would prove a sync
        # that did not happen.
        if isinstance(unusable := signed_by(message.raw_message, body, keyring), Unusable):
            await dead_letter(message, body, unusable.reason, unusable.detail, tell=False)
            count_refused(unusable.reason, topic_of(message))
            return
        await forward_barrier(barrier)
        return
    if b'"redrive"' in body[:64] and (redrive := _redrive(body)) is not None:
        # Only the coordinator's (signed) requests: a forged one would make ingest do work.
        if isinstance(unusable := signed_by(message.raw_message, body, keyring), Unusable):
            await dead_letter(message, body, unusable.reason, unusable.detail, tell=False)
            count_refused(unusable.reason, topic_of(message))
            return
        if (age := stale_age(redrive.issued_at, settings.command_ttl_s, settings.max_clock_ahead_s)) is not None:
            await dead_letter(
                message,
                body,
                "stale_command",
                f"a re-drive request asked {age:.0f}s ago (it must be "
                f"within SCHOOLMIG_COMMAND_TTL_S, {settings.command_ttl_s:.0f}s, and not ahead of this "
                f"clock by more than SCHOOLMIG_MAX_CLOCK_AHEAD_S)",
                tell=False,
            )
            count_refused("stale_command", topic_of(message))
            return
        await fan_out_again(store, redrive)
        return
    envelope = read_envelope(body)
    if isinstance(envelope, Rejection):
        await dead_letter(message, body, envelope.reason, envelope.message, errors=envelope.errors)
        return
    if isinstance(envelope, ChangeBatch):
        await on_changes(envelope, body, message, store)
        return
    settled = await store.settled(envelope.school_id, envelope.snapshot_id)
    if settled == "released":
        return  # the same snapshot again: released once already
    if isinstance(envelope, SnapshotManifest) and (why := _too_large(envelope)) is not None:
        await dead_letter(message, body, "snapshot_too_large", why)  # first: a crash before the mark sends it again
        await store.refuse(envelope.school_id, envelope.snapshot_id, "snapshot_too_large")  # and drops its chunks
        await publish(
            broker,
            keyring,
            SchoolRejected(
                school_id=envelope.school_id, snapshot_id=envelope.snapshot_id, reason="snapshot_too_large", message=why
            ),
            topics.events,
            key=envelope.school_id.encode(),
        )
        return
    if settled == "refused":
        if isinstance(envelope, SnapshotManifest):  # within the limit now (it was raised): taken after all
            await store.unrefuse(envelope.school_id, envelope.snapshot_id)
        else:  # its manifest was dead-lettered with the reason; its chunks are not kept
            log.warning("chunk of refused snapshot %s/%s dropped", envelope.school_id, envelope.snapshot_id)
            metrics.ingest_rejected.add(1, {"reason": "chunk_of_refused_snapshot"})
            await tell_refused(  # answered, not kept: a refused snapshot's chunks would flood the dead letter
                message,
                "chunk_of_refused_snapshot",
                f"snapshot {envelope.snapshot_id} was refused (see its report.ready): its chunks are not kept",
                sender_of(body, None),
            )
            return
    if (refusal := _refusal(*await store.mode_of(envelope.school_id))) is not None:
        await dead_letter(message, body, *refusal)  # kept, never half-applied
        if isinstance(envelope, SnapshotManifest):
            await publish(
                broker,
                keyring,
                SchoolRejected(
                    school_id=envelope.school_id, snapshot_id=envelope.snapshot_id, reason=refusal[0], message=refusal[1]
                ),
                topics.events,
                key=envelope.school_id.encode(),
            )
        return
    if isinstance(envelope, SnapshotManifest):
        await store.save_manifest(envelope)
    else:
        data = chunks.decode(envelope.data_b64)
        # What is stored never outgrows what the manifest announced (or the limit before it
        # came): chunks cannot smuggle a larger snapshot in than the size check let through.
        digest = chunks.sha256_hex(data)
        announced, stored, expected, rivals = await store.stored_bytes(
            envelope.school_id, envelope.snapshot_id, envelope.index, digest
        )
        # Once the manifest is here, a chunk it does not name is never stored (before it, every
        # candidate is kept and assembly takes the one whose hash the manifest names).
        if announced is not None and expected is None:
            await dead_letter(message, body, "invalid_chunk", f"chunk {envelope.index} is past its manifest's chunk_count")
            return
        if expected is not None and digest != expected:
            await dead_letter(
                message, body, "chunk_hash_mismatch", f"chunk {envelope.index}'s SHA-256 is not the one its manifest names"
            )
            return
        if announced is None and rivals >= MAX_CHUNK_CANDIDATES:  # before the manifest: a few candidates, not a flood
            await dead_letter(
                message,
                body,
                "too_many_candidates",
                f"chunk {envelope.index} already has {rivals} other candidates waiting for the manifest",
            )
            return
        allowed = min(settings.max_snapshot_bytes, announced if announced is not None else settings.max_snapshot_bytes)
        if stored + len(data) > allowed:
            why = f"its chunks come to more than {allowed} bytes (announced, or SCHOOLMIG_MAX_SNAPSHOT_BYTES)"
            await dead_letter(message, body, "snapshot_too_large", why)
            await store.refuse(envelope.school_id, envelope.snapshot_id, "snapshot_too_large")
            return
        await store.save_chunk(envelope, data, digest)
    await release_if_complete(store, envelope.school_id, envelope.snapshot_id, message)


async def on_changes(batch: ChangeBatch, body: bytes, message: KafkaMessage, store: IngestStore) -> None:
    """Keep the changes (``migration.changes``), then send them on like a snapshot's records.

    Taken in every mode but ``api``: in maintenance the client holds its writes, and what it
    sent before it saw the maintenance must still land (the cutover's barrier comes after it
    on the partition). Once the school runs on the API, a browser's change is refused: it is
    kept in the dead letter, and the school is told (``school.rejected``)."""
    mode, _ = await store.mode_of(batch.school_id)
    if mode is Mode.API:
        why = "the school runs on the API now: a browser's change would be lost to it; write through the API"
        await dead_letter(message, body, "school_cut_over", why)
        first = batch.changes[0]
        await publish(
            broker,
            keyring,
            SchoolRejected(
                school_id=batch.school_id,
                snapshot_id=change_id(batch.client_id, first.seq),
                reason="school_cut_over",
                message=why,
            ),
            topics.events,
            key=batch.school_id.encode(),
        )
        return
    plan = plan_changes(
        batch, max_depth=settings.max_nesting_depth, now=datetime.now(UTC), max_ahead_s=settings.max_clock_ahead_s
    )
    reused = await store.save_changes(batch, plan.accepted)
    for position in sorted(reused):  # kept, never applied: which of the two is right is the client's to say
        change = batch.changes[position]
        await dead_letter(
            message,
            encode(change.model_dump(mode="json")),
            "conflicting_change",
            f"change {change_id(batch.client_id, change.seq)} was received before with other content",
            about=Sender(batch.school_id, "changes", None, batch.client_id, [change.seq]),
        )
    plan = without(plan, reused)
    default_ts = await store.school_default_ts(batch.school_id, min(c.source_ts for c in batch.changes))
    # The school's zone is fixed by the first write mapped: a message whose changes all went
    # elsewhere (reused, refused) maps nothing and fixes nothing.
    zone = (
        await store.school_zone(batch.school_id, batch.timezone, batch.client_id, settings.default_timezone)
        if plan.accepted
        else None
    )
    await publish_wires(
        change_batches(
            batch,
            plan,
            default_ts=default_ts,
            timezone=zone.name if zone is not None else settings.default_timezone,
            max_records=settings.batch_records,
            max_bytes=settings.batch_bytes,
        )
    )
    for change in batch.changes:
        metrics.changes_received.add(1, {"op": change.op.value, "domain": change.domain.value})


async def release_if_complete(store: IngestStore, school_id: str, snapshot_id: str, message: KafkaMessage) -> None:
    state = await store.release_state(school_id, snapshot_id)
    manifest = state.manifest
    if manifest is None or state.released or state.chunks_received < manifest.chunk_count:
        return
    try:
        content = chunks.assemble(
            await store.chunks(school_id, snapshot_id),
            chunk_sha256=manifest.chunk_sha256,
            sha256=manifest.sha256,
            size_bytes=manifest.size_bytes,
        )
        parsed = parse_snapshot(content, manifest.format, aliases=settings.key_aliases, max_depth=settings.max_nesting_depth)
    except (chunks.AssemblyError, UnreadableSnapshot) as exc:
        reason = getattr(exc, "reason", "unreadable_snapshot")
        why = f"snapshot {school_id}/{snapshot_id} not released: {exc}"
        await dead_letter(message, b"", reason, why, about=Sender(school_id, "snapshot.manifest", snapshot_id))
        await store.refuse(school_id, snapshot_id, reason)  # never released: not reported incomplete later either
        await publish(
            broker,
            keyring,
            SchoolRejected(school_id=school_id, snapshot_id=snapshot_id, reason=reason, message=why),
            topics.events,
            key=school_id.encode(),
        )
        return
    path = await asyncio.to_thread(write_backup_file, settings.backup_dir, school_id, snapshot_id, content, manifest.sha256)
    verified = await store.save_backup(manifest, content, str(path))
    twin = await store.unchanged_of(manifest)
    if twin is not None:
        # The same file its device sent last (a re-run, a second upload): no new work. Noted
        # before its audit is stored, so it is never taken for the school's newest audited one.
        await store.note_unchanged(school_id, snapshot_id, twin)
    zone = await store.school_zone(school_id, manifest.timezone, manifest.device_id, settings.default_timezone)
    summary, findings_json = audited(parsed, zone_findings(zone, await store.device_zones(school_id)), zone=zone)
    await store.save_audit(manifest, summary, findings_json)
    default_ts = await store.default_ts(school_id, snapshot_id, manifest.taken_at)
    withheld: tuple[Literal["superseded", "unchanged"], str] | None = None  # not fanned out, and why
    if twin is not None:
        withheld = ("unchanged", twin)
        log.info("snapshot %s/%s is identical to %s, its device's latest: unchanged", school_id, snapshot_id, twin)
    else:
        # Each record's version from its device's history (shared.ledger.devices), once.
        await derive_history(store, school_id, snapshot_id)
        derived = await store.derive(manifest, held_records(parsed), readable_domains(parsed))
        if derived.superseded_by is not None:
            # Read before its device's newest snapshot: that later reading of the same browser
            # holds what it still has. Kept (backup, audit), not fanned out; the coordinator notes it.
            await store.note_superseded(school_id, snapshot_id, derived.superseded_by)
            withheld = ("superseded", derived.superseded_by)
            log.warning(
                "snapshot %s/%s was read before %s of its device: superseded, not fanned out",
                school_id,
                snapshot_id,
                derived.superseded_by,
            )
        else:
            await publish_all(plan_fanout(parsed, manifest, derived.versions), manifest, default_ts, zone.name)
    await store.mark_released(manifest, summary)
    await announce(manifest, summary, findings_json, verified, withheld=withheld)
    metrics.snapshots_released.add(1, {"school_id": school_id})
    log.info(
        "released snapshot %s/%s: %d records, %d audit findings",
        school_id,
        snapshot_id,
        sum(summary.source_counts.values()),
        len(findings_json),
    )


async def derive_history(store: IngestStore, school_id: str, before: str) -> None:
    """Devices whose snapshots were released before device histories existed: each one's
    newest released snapshot is derived first (from its verified backup, as it was loaded:
    every record at its read time), so the snapshot at hand is judged against what its
    devices held, not taken as every record's first write."""
    for older in await store.underived_history(school_id, before):
        found = await store.backup_of(school_id, older)
        if found is None:
            continue
        manifest, content, _, aliases = found
        parsed = parse_snapshot(content, manifest.format, aliases=aliases, max_depth=settings.max_nesting_depth)
        await store.derive(manifest, held_records(parsed), readable_domains(parsed), as_released=True)
        log.info("%s: derived %s (device %r) from its backup: the device's history so far", school_id, older, manifest.device_id)


def audited(
    parsed: ParsedSnapshot, extra: Iterable[Finding] = (), *, zone: SchoolZone
) -> tuple[AuditSummary, list[dict[str, object]]]:
    """The snapshot's audit: its summary (with the findings' counts and the zone its records
    are read in) and every finding."""
    findings = [*audit_snapshot(parsed), *extra]
    summary = audit_summary(parsed).model_copy(
        update={
            "findings": summarise(findings),
            "critical_findings": sum(f.severity is Severity.CRITICAL for f in findings),
            "timezone": zone.name,
            "timezone_source": zone.source.value,
        }
    )
    return summary, [f.as_json() for f in findings]


async def announce(
    manifest: SnapshotManifest,
    summary: AuditSummary,
    findings: list[dict[str, object]],
    verified: bool,
    *,
    withheld: tuple[Literal["superseded", "unchanged"], str] | None = None,
) -> None:
    """The release's two events: the audit, then what the coordinator acts on: the snapshot
    released (fanned out), or ``withheld`` (superseded by, or unchanged as, another of its device)."""
    key = manifest.school_id.encode()
    await publish(
        broker,
        keyring,
        AuditCompleted(
            school_id=manifest.school_id,
            snapshot_id=manifest.snapshot_id,
            summary=summary,
            findings=findings[:AUDIT_EVENT_FINDINGS],
            findings_total=len(findings),
        ),
        topics.events,
        key=key,
    )
    if withheld is not None:
        await publish(
            broker,
            keyring,
            SnapshotWithheld(
                school_id=manifest.school_id,
                snapshot_id=manifest.snapshot_id,
                withheld=withheld[0],
                because_of=withheld[1],
                device_id=manifest.device_id,
            ),
            topics.events,
            key=key,
        )
        return
    await publish(
        broker,
        keyring,
        SnapshotReleased(
            school_id=manifest.school_id,
            snapshot_id=manifest.snapshot_id,
            format=manifest.format,
            taken_at=manifest.taken_at,
            sha256=manifest.sha256,
            backup_verified=verified,
            audit=summary,
        ),
        topics.events,
        key=key,
    )


def _too_large(manifest: SnapshotManifest) -> str | None:
    """Why a manifest announces more than ingest may hold (it assembles a whole snapshot in memory)."""
    limit = settings.max_snapshot_bytes
    if manifest.size_bytes > limit:
        return f"the snapshot is {manifest.size_bytes} bytes; the limit is {limit} (SCHOOLMIG_MAX_SNAPSHOT_BYTES)"
    return None


def _refusal(mode: Mode | None, maintenance: bool) -> tuple[str, str] | None:
    """Why a school's snapshot cannot be taken now, if it cannot."""
    if maintenance:
        return "school_in_maintenance", "the school is in maintenance (cutover in progress): its writes are held"
    if mode is Mode.API:
        return "school_cut_over", "the school runs on the API now: a browser snapshot would overwrite newer data"
    return None


def record_of(message: KafkaMessage) -> Any:
    """The Kafka record of a message of this (single-message) subscriber."""
    record = message.raw_message
    return record[0] if isinstance(record, tuple) else record


def topic_of(message: KafkaMessage) -> str:
    """The topic of a message of this (single-message) subscriber."""
    return str(record_of(message).topic)


def _redrive(body: bytes) -> Redrive | None:
    try:
        return Redrive.model_validate_json(body)
    except ValueError:
        return None


async def fan_out_again(store: IngestStore, redrive: Redrive) -> None:
    """The snapshot's records again, from its verified backup, unless a newer snapshot of the
    school was released since (its records would overwrite newer rows)."""
    found = await store.backup_of(redrive.school_id, redrive.snapshot_id)
    if found is None:
        log.warning(
            "re-drive %s of %s/%s: no verified backup of a released snapshot",
            redrive.redrive_id,
            redrive.school_id,
            redrive.snapshot_id,
        )
        return
    manifest, content, default_ts, aliases = found
    if (newer := await store.newer_released(redrive.school_id, redrive.snapshot_id, manifest.taken_at)) is not None:
        log.warning("re-drive of %s/%s skipped: %s of its device is newer", redrive.school_id, redrive.snapshot_id, newer)
        return
    aliases = aliases | redrive.key_aliases  # as released, and an operator's map-key on top
    parsed = parse_snapshot(content, manifest.format, aliases=aliases, max_depth=settings.max_nesting_depth)
    zone = await store.school_zone(redrive.school_id, None, manifest.device_id, settings.default_timezone)  # fixed by now
    if redrive.key_aliases:
        # Audited again with the mapping (recorded, with who and why): the release's audit is
        # the one accounting and the validator read from now on, so it is stored first.
        mapped = [
            Finding("operator_key_mapping", Severity.INFO, domain, field=key, detail=redrive.reason)
            for key, domain in sorted(redrive.key_aliases.items())
        ]
        summary, findings = audited(
            parsed, [*mapped, *zone_findings(zone, await store.device_zones(redrive.school_id))], zone=zone
        )
        await store.save_audit(manifest, summary, findings)
        await store.reaudit(manifest, summary)
        log.warning(
            "%s/%s audited again with %d key(s) mapped: %s",
            redrive.school_id,
            redrive.snapshot_id,
            len(mapped),
            redrive.reason,
        )
    # As its release sent them; with a key mapped, its records join its device's history.
    derived = await (
        store.extend_derivation(manifest, held_records(parsed))
        if redrive.key_aliases
        else store.derivation_of(redrive.school_id, redrive.snapshot_id)
    )
    if derived is None and await store.has_history(manifest.school_id, manifest.device_id):
        log.warning(
            "re-drive of %s/%s skipped: never derived (superseded by its device's later reading, or unchanged)",
            redrive.school_id,
            redrive.snapshot_id,
        )
        return
    versions = derived.versions if derived is not None else None
    await publish_all(plan_fanout(parsed, manifest, versions), manifest, default_ts or manifest.taken_at, zone.name)
    if redrive.key_aliases:
        await announce(manifest, summary, findings, verified=True)  # the coordinator's gate sees the new audit
    # The school's changes too: those lost in flight come again, the others are judged equal.
    resent = 0
    for batch in await store.stored_changes(redrive.school_id):
        plan = plan_changes(batch, max_depth=settings.max_nesting_depth)
        await publish_wires(
            change_batches(
                batch,
                plan,
                default_ts=default_ts,
                timezone=zone.name,
                max_records=settings.batch_records,
                max_bytes=settings.batch_bytes,
            )
        )
        resent += len(batch.changes)
    log.warning(
        "re-drove %s/%s from its verified backup, and %d change(s) (%s)",
        redrive.school_id,
        redrive.snapshot_id,
        resent,
        redrive.reason,
    )


def _barrier(body: bytes) -> Barrier | None:
    try:
        return Barrier.model_validate_json(body)
    except ValueError:
        return None  # not a barrier after all: read as an envelope (and dead-lettered if none)


async def forward_barrier(barrier: Barrier) -> None:
    """Every message before the barrier on this partition is fanned out: pass it on."""
    targets = [*topics.raw_topics, topics.quarantine]
    assert settings.kafka_bootstrap_servers
    await forward(broker, keyring, barrier, targets, await partition_counts(settings.kafka_bootstrap_servers, targets))


async def publish_all(outgoing: list[Outgoing], manifest: SnapshotManifest, default_ts: datetime, timezone: str) -> None:
    """Send every record, in batch messages, pipelined; return only when the broker has them all."""
    headers = {"snapshot_id": manifest.snapshot_id, "schema_version": str(manifest.schema_version)}
    await publish_wires(
        fanout_batches(
            outgoing,
            manifest,
            max_records=settings.batch_records,
            max_bytes=settings.batch_bytes,
            max_record_bytes=settings.max_record_bytes,
            default_ts=default_ts,
            timezone=timezone,
        ),
        headers,
    )


async def publish_wires(wires: Iterable[WireBatch], headers: dict[str, str] | None = None) -> None:
    """Each batch to its domain's raw topic or the quarantine topic, pipelined; return only
    when the broker has them all."""
    pending = []
    for wire in wires:
        topic = topics.quarantine if wire.kind == "quarantine" else topics.raw(wire.domain)
        pending.append(await publish(broker, keyring, wire.body, topic, key=wire.key, headers=headers, no_confirm=True))
    await asyncio.gather(*pending)


async def report_if_held(lease: Lease, store: IngestStore) -> None:
    if await lease.held():
        await report_overdue(store)


async def report_overdue(store: IngestStore) -> None:
    """Report, once each, snapshots still missing parts after the timeout."""
    for school_id, snapshot_id, expected, missing, age in await store.overdue(settings.incomplete_snapshot_timeout_s):
        await publish(
            broker,
            keyring,
            SnapshotIncomplete(
                school_id=school_id,
                snapshot_id=snapshot_id,
                manifest_received=expected is not None,
                chunks_expected=expected,
                missing_chunks=missing,
                waited_s=round(age, 1),
            ),
            topics.events,
            key=school_id.encode(),
        )
        await store.mark_incomplete(school_id, snapshot_id, missing)
        metrics.ingest_rejected.add(1, {"reason": "incomplete_snapshot"})
        log.warning(
            "snapshot %s/%s incomplete after %.0fs: missing %s",
            school_id,
            snapshot_id,
            age,
            "the manifest" if expected is None else f"chunks {missing}",
        )


async def dead_letter(
    message: KafkaMessage,
    body: bytes,
    reason: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    about: Sender | None = None,
    tell: bool = True,
) -> None:
    """Keep a message not taken in the dead letter (whole, for operators) and, when it is a
    client's (``tell``), answer its client on the outcomes topic: the rule it broke, field by
    field, under its own correlation id."""
    sender = about or sender_of(body, record_of(message).key)
    await shared_dead_letter(
        broker, topics.deadletter, message.raw_message, body, reason, detail, school_id=sender.school_id, errors=errors
    )
    metrics.ingest_rejected.add(1, {"reason": reason})
    if tell:
        await tell_refused(message, reason, detail, sender, errors)


async def tell_refused(
    message: KafkaMessage, reason: str, detail: str, sender: Sender, errors: list[FieldError] | None = None
) -> None:
    """Answer a client's message that was not taken, on the outcomes topic it may read."""
    source = record_of(message)
    correlation = correlation_of(source)
    await publish(
        clients,
        keyring,
        MessageRefused(
            school_id=sender.school_id,
            kind=sender.kind,
            snapshot_id=sender.snapshot_id,
            client_id=sender.client_id,
            seqs=sender.seqs,
            correlation_id=correlation,
            reason=reason,
            message=detail,
            errors=errors or [],
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
        ),
        topics.outcomes,
        key=(sender.school_id or "").encode() or None,
        correlation_id=correlation,
    )


report_readiness(app)  # last: ready once every start-up hook above has run
