"""Ingest service wiring: the public ingest topic in; raw, quarantine, events, dead letter out.

A snapshot is released downstream only when its manifest and every chunk are stored,
the chunks assemble to the announced SHA-256, and the backup copy verifies. Releasing
is idempotent: publishing the same snapshot twice releases it once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from faststream import Context, FastStream
from faststream.kafka import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from services.ingest.fanout import audit_summary, plan_fanout
from services.ingest.snapshot import UnreadableSnapshot, parse_snapshot
from services.ingest.store import IngestStore
from shared import chunks
from shared.kafka import make_broker
from shared.messages import (
    INGEST_ENVELOPE,
    MAX_INGEST_MESSAGE_BYTES,
    DeadLetter,
    QuarantinedRecord,
    SnapshotManifest,
    SnapshotReleased,
)
from shared.service import prepare
from shared.settings import Settings
from shared.telemetry import setup_telemetry
from shared.topics import Topics

log = logging.getLogger("schoolmig.ingest")

settings = Settings()
topics = Topics.from_settings(settings)
broker = make_broker(settings, client_id="ingest")
app = FastStream(broker)
metrics = setup_telemetry("ingest", settings.metrics_port, settings.metrics_host)

Store = Annotated[IngestStore, Context("store")]


@app.on_startup
async def start() -> None:
    app.context.set_global("store", IngestStore(await prepare(settings, "ingest")))


@app.on_shutdown
async def stop(store: Store) -> None:
    await store.pool.close()


async def raw_body(msg: KafkaMessage) -> bytes:
    """Take the bytes as sent: any client may publish, with or without a content-type."""
    return bytes(msg.body)


@broker.subscriber(
    topics.ingest,
    group_id="schoolmig-ingest",
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.NACK_ON_ERROR,
    decoder=raw_body,
)
async def on_ingest(body: bytes, message: KafkaMessage, store: Store) -> None:
    if len(body) > MAX_INGEST_MESSAGE_BYTES:
        await dead_letter(message, body, "oversized", f"{len(body)} bytes, limit {MAX_INGEST_MESSAGE_BYTES}")
        return
    try:
        envelope = INGEST_ENVELOPE.validate_json(body)
    except ValidationError as exc:
        await dead_letter(message, body, "invalid_envelope", _summarise(exc))
        return
    if isinstance(envelope, SnapshotManifest):
        await store.save_manifest(envelope)
    else:
        try:
            data = chunks.decode(envelope.data_b64)
        except ValueError:
            await dead_letter(message, body, "invalid_chunk", "data_b64 is not valid base64")
            return
        await store.save_chunk(envelope, data)
    await release_if_complete(store, envelope.school_id, envelope.snapshot_id, message)


async def release_if_complete(store: IngestStore, school_id: str, snapshot_id: str, message: KafkaMessage) -> None:
    state = await store.release_state(school_id, snapshot_id)
    manifest = state.manifest
    if manifest is None or state.released or state.chunks_received < manifest.chunk_count:
        return
    try:
        content = chunks.assemble(
            await store.chunks(school_id, snapshot_id),
            chunk_sha256=manifest.chunk_sha256, sha256=manifest.sha256, size_bytes=manifest.size_bytes,
        )  # fmt: skip
        parsed = parse_snapshot(content, manifest.format)
    except (chunks.AssemblyError, UnreadableSnapshot) as exc:
        reason = getattr(exc, "reason", "unreadable_snapshot")
        log.warning("snapshot %s/%s not released: %s", school_id, snapshot_id, reason)
        await dead_letter(message, b"", reason, f"snapshot {school_id}/{snapshot_id}: {exc}")
        return
    verified = await store.save_backup(manifest, content)
    audit = audit_summary(parsed)
    await publish_all(plan_fanout(parsed, manifest))
    await store.mark_released(manifest, audit)
    await broker.publish(
        SnapshotReleased(
            school_id=school_id, snapshot_id=snapshot_id, format=manifest.format, taken_at=manifest.taken_at,
            sha256=manifest.sha256, backup_verified=verified, audit=audit,
        ),
        topics.events, key=school_id.encode(),
    )  # fmt: skip
    metrics.snapshots_released.add(1, {"school_id": school_id})
    log.info("released snapshot %s/%s: %d records", school_id, snapshot_id, sum(audit.source_counts.values()))


async def publish_all(outgoing: list) -> None:
    """Send every message, pipelined, and return only when the broker has them all."""
    pending = []
    for item in outgoing:
        topic = topics.quarantine if isinstance(item.message, QuarantinedRecord) else topics.raw(item.domain)
        pending.append(await broker.publish(item.message, topic, key=item.key, no_confirm=True))
    await asyncio.gather(*pending)


async def dead_letter(message: KafkaMessage, body: bytes, reason: str, detail: str) -> None:
    raw = message.raw_message
    await broker.publish(
        DeadLetter(
            reason=reason, message=detail, topic=raw.topic, partition=raw.partition, offset=raw.offset,
            payload_b64=chunks.encode(body),
        ),
        topics.deadletter,
        key=raw.key,  # one sender's dead letters stay in order on one partition
    )  # fmt: skip
    metrics.ingest_rejected.add(1, {"reason": reason})
    log.warning("dead-lettered %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, reason)


def _summarise(exc: ValidationError) -> str:
    """Field locations and error kinds only: the input may hold personal data."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['type']}" for e in exc.errors()[:5]]
    return "; ".join(parts) or "invalid"
