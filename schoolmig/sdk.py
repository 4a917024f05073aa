"""Publishing a school's browser data to the ingest topic.

``build_envelopes`` is pure: it reads the file's bytes, works out its format, and cuts it
into a manifest plus chunks (each far below Kafka's message limit). ``publish_snapshot``
sends them, keyed by school so they stay in order on one partition.

A snapshot's time is when it was read (``taken_at``: the caller's, else this client's clock
now), never the app's ``mockDataMetadata.lastUpdated`` (which only some of the app's saves
touch; it travels as ``app_last_updated``, metadata). Its id follows from what it is
(``new_snapshot_id``: the read time, then a hash of school, device, read time and content),
so publishing one reading again (a retry, a re-run) is the same snapshot, which ingest
releases once; a revert A → B → A read later is a new one. An upload identical to its
device's latest snapshot is reported unchanged by ingest, whatever its time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.source.source_files import detect_format, load_document
from shared.wire import chunks
from shared.wire.messages import (
    MAX_CHUNK_BYTES,
    UNNAMED_DEVICE,
    Change,
    ChangeBatch,
    SnapshotChunk,
    SnapshotFormat,
    SnapshotManifest,
)


def app_last_updated(document: dict[str, Any]) -> datetime | None:
    """The export's own ``lastUpdated`` (or ``mockDataMetadata.lastUpdated`` in a dump):
    metadata of the app's, not when the data was read."""
    candidates: list[Any] = [document.get("lastUpdated")]
    meta = document.get("mockDataMetadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
    if isinstance(meta, dict):
        candidates.append(meta.get("lastUpdated"))
    for value in candidates:
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def new_snapshot_id(school_id: str, content: bytes, taken_at: datetime, device_id: str = UNNAMED_DEVICE) -> str:
    """The id of one reading: ``<read time, UTC, to the microsecond>-<hash>``, the hash of
    school, device, read time and content. The same reading published twice has the same id
    (ingest releases it once); any other reading has another. Two readings of one device at
    the same instant are ordered by this id (the snapshot order is ``(taken_at, id)``)."""
    try:
        moment = taken_at.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"taken_at {taken_at!r} is out of range") from None
    head = b"\0".join([school_id.encode(), device_id.encode(), moment.isoformat().encode()])
    digest = hashlib.sha256(head + b"\0" + content).hexdigest()[:20]
    return f"{moment:%Y%m%dT%H%M%S.%fZ}-{digest}"


def build_envelopes(
    content: bytes,
    school_id: str,
    *,
    fmt: SnapshotFormat | None = None,
    snapshot_id: str | None = None,
    taken_at: datetime | None = None,
    device_id: str = UNNAMED_DEVICE,
    chunk_bytes: int = MAX_CHUNK_BYTES,
    timezone: str | None = None,
) -> tuple[SnapshotManifest, list[SnapshotChunk]]:
    """Manifest and chunks for one file read at ``taken_at`` (default: now, by this clock)
    from ``device_id``, whose browser runs in ``timezone`` (an IANA name; None: not reported).
    Raises ValueError when the file is not a JSON object or the zone is unknown."""
    document = load_document(content)
    digest = chunks.sha256_hex(content)
    parts = chunks.split(content, chunk_bytes)
    if taken_at is not None and taken_at.tzinfo is None:
        raise ValueError("taken_at needs a time zone (a read time is an instant)")
    taken_at = taken_at or datetime.now(UTC)
    snapshot_id = snapshot_id or new_snapshot_id(school_id, content, taken_at, device_id)
    manifest = SnapshotManifest(
        school_id=school_id,
        snapshot_id=snapshot_id,
        format=fmt or detect_format(document),
        taken_at=taken_at,
        device_id=device_id,
        app_last_updated=app_last_updated(document),
        timezone=timezone,
        size_bytes=len(content),
        sha256=digest,
        chunk_count=len(parts),
        chunk_sha256=[chunks.sha256_hex(p) for p in parts],
    )
    envelopes = [
        SnapshotChunk(school_id=school_id, snapshot_id=snapshot_id, index=i, data_b64=chunks.encode(p))
        for i, p in enumerate(parts)
    ]
    return manifest, envelopes


async def publish_snapshot(
    bootstrap_servers: str,
    topic: str,
    school_id: str,
    source: Path | bytes,
    *,
    fmt: SnapshotFormat | None = None,
    snapshot_id: str | None = None,
    taken_at: datetime | None = None,
    device_id: str = UNNAMED_DEVICE,
    on_progress: Callable[[int, int], None] | None = None,
    timezone: str | None = None,
) -> SnapshotManifest:
    """Publish one file as a snapshot of ``school_id`` read at ``taken_at`` (default now)
    from ``device_id`` in ``timezone``; return its manifest once Kafka has it all."""
    content = source.read_bytes() if isinstance(source, Path) else source
    manifest, parts = build_envelopes(
        content, school_id, fmt=fmt, snapshot_id=snapshot_id, taken_at=taken_at, device_id=device_id, timezone=timezone
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", compression_type="gzip", max_request_size=1024 * 1024
    )
    await producer.start()
    try:
        key = school_id.encode()
        headers = [("content-type", b"application/json")]
        await producer.send_and_wait(topic, manifest.model_dump_json().encode(), key=key, headers=headers)
        for done, part in enumerate(parts, start=1):
            await producer.send_and_wait(topic, part.model_dump_json().encode(), key=key, headers=headers)
            if on_progress:
                on_progress(done, len(parts))
    finally:
        await producer.stop()
    return manifest


async def publish_change(
    bootstrap_servers: str, topic: str, school_id: str, client_id: str, *changes: Change, timezone: str | None = None
) -> ChangeBatch:
    """Publish one or more changes of one client (``shared.wire.messages.Change``) as one message,
    keyed by school; return it once Kafka has it. For a client that keeps working while the
    broker is away, use ``schoolmig.hybrid.HybridClient`` (a durable outbox in front of this)."""
    from schoolmig.hybrid import kafka_publisher

    batch = ChangeBatch(school_id=school_id, client_id=client_id, changes=list(changes), timezone=timezone)
    await kafka_publisher(bootstrap_servers, topic)(batch)
    return batch
