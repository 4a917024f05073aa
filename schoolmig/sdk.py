"""Publishing a school's browser data to the ingest topic.

``build_envelopes`` is pure: it reads the file's bytes, works out its format and source
timestamp, and cuts it into a manifest plus chunks (each far below Kafka's message
limit). ``publish_snapshot`` sends them, keyed by school so they stay in order on one
partition.

Each upload gets its own snapshot id (``new_snapshot_id``: when it was taken, a hash of
school and content, and a random part), so two uploads never collide, not even a revert
A → B → A, whose second A is a newer snapshot than B. Ingest releases one snapshot id
once, however often its messages are delivered; to publish one upload again (a retry),
pass the same ``snapshot_id``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared import chunks
from shared.messages import (
    MAX_CHUNK_BYTES,
    Change,
    ChangeBatch,
    SnapshotChunk,
    SnapshotFormat,
    SnapshotManifest,
)
from shared.source_files import detect_format, load_document


def _taken_at(document: dict[str, Any]) -> datetime | None:
    """The export's own ``lastUpdated`` (or ``mockDataMetadata.lastUpdated`` in a dump)."""
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


def new_snapshot_id(school_id: str, content: bytes, taken_at: datetime) -> str:
    """An id no other upload has: ``<taken at, UTC>-<content hash>-<random>`` (sortable by
    time; the hash says which file; the random part tells two uploads of one file apart)."""
    digest = hashlib.sha256(school_id.encode() + b"\0" + content).hexdigest()[:16]
    try:
        moment = taken_at.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"taken_at {taken_at!r} is out of range") from None
    return f"{moment:%Y%m%dT%H%M%SZ}-{digest}-{secrets.token_hex(4)}"


def build_envelopes(
    content: bytes,
    school_id: str,
    *,
    fmt: SnapshotFormat | None = None,
    snapshot_id: str | None = None,
    taken_at: datetime | None = None,
    chunk_bytes: int = MAX_CHUNK_BYTES,
) -> tuple[SnapshotManifest, list[SnapshotChunk]]:
    """Manifest and chunks for one file. Raises ValueError when the file is not a JSON object."""
    document = load_document(content)
    digest = chunks.sha256_hex(content)
    parts = chunks.split(content, chunk_bytes)
    taken_at = taken_at or _taken_at(document) or datetime.now(UTC)
    snapshot_id = snapshot_id or new_snapshot_id(school_id, content, taken_at)
    manifest = SnapshotManifest(
        school_id=school_id,
        snapshot_id=snapshot_id,
        format=fmt or detect_format(document),
        taken_at=taken_at,
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
    on_progress: Callable[[int, int], None] | None = None,
) -> SnapshotManifest:
    """Publish one file as a snapshot of ``school_id``; return its manifest once Kafka has it all."""
    content = source.read_bytes() if isinstance(source, Path) else source
    manifest, parts = build_envelopes(content, school_id, fmt=fmt, snapshot_id=snapshot_id)
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


async def publish_change(bootstrap_servers: str, topic: str, school_id: str, client_id: str, *changes: Change) -> ChangeBatch:
    """Publish one or more changes of one client (``shared.messages.Change``) as one message,
    keyed by school; return it once Kafka has it. For a client that keeps working while the
    broker is away, use ``schoolmig.hybrid.HybridClient`` (a durable outbox in front of this)."""
    from schoolmig.hybrid import kafka_publisher

    batch = ChangeBatch(school_id=school_id, client_id=client_id, changes=list(changes))
    await kafka_publisher(bootstrap_servers, topic)(batch)
    return batch
