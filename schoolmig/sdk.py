"""Publishing a school's browser data to the ingest topic.

``build_envelopes`` is pure: it reads the file's bytes, works out its format and source
timestamp, and cuts it into a manifest plus chunks (each far below Kafka's message
limit). ``publish_snapshot`` sends them, keyed by school so they stay in order on one
partition. The snapshot id defaults to a hash of school and content, so publishing the
same file twice is recognised by ingest and released once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared import chunks
from shared.messages import (
    MAX_CHUNK_BYTES,
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
    snapshot_id = snapshot_id or hashlib.sha256(f"{school_id}\0{digest}".encode()).hexdigest()[:32]
    manifest = SnapshotManifest(
        school_id=school_id,
        snapshot_id=snapshot_id,
        format=fmt or detect_format(document),
        taken_at=taken_at or _taken_at(document) or datetime.now(UTC),
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
