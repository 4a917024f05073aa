"""The public wire contract as a FastStream app, for its AsyncAPI document only.

``make docs`` renders it to ``docs/asyncapi.yaml`` (``faststream docs gen``), so a Java,
Node or kcat client can publish without reading Python; a test keeps the file current.
It declares what a *client* sees: what to publish to the ingest topic, and the events
and dead letters it may read back. Nothing here connects to a broker.
"""

from __future__ import annotations

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared.messages import (
    MAX_CHUNK_BYTES,
    MAX_INGEST_MESSAGE_BYTES,
    DeadLetter,
    Event,
    SnapshotChunk,
    SnapshotManifest,
)
from shared.settings import Settings
from shared.topics import Topics

topics = Topics.from_settings(Settings(topic_prefix="schoolmig", ingest_topic=None))
broker = KafkaBroker("kafka:9092", description="Any Kafka cluster; the topic names use the default prefix.")

HOW_TO_PUBLISH = f"""\
Publish one snapshot as a manifest followed by its chunks, all with the Kafka key
`<school_id>` (so they stay in order on one partition), each message at most
{MAX_INGEST_MESSAGE_BYTES:,} bytes. Cut the file's bytes into chunks of at most {MAX_CHUNK_BYTES:,} bytes; `data_b64` is a chunk's bytes
in base64; `chunk_sha256[i]` is the SHA-256 (hex) of chunk i's bytes; `sha256` is the
SHA-256 of the whole file. The file is either a raw localStorage dump (an object of
key -> JSON string) or a MockDataService export (an object of arrays). Ingest releases
the snapshot once every chunk has arrived and matches; the same snapshot (same
school_id and snapshot_id) published again is released once. Messages it cannot read
go to the dead-letter topic with a reason."""

broker.publisher(
    topics.ingest, schema=SnapshotManifest, title=f"{topics.ingest}:Manifest",
    description="First message of a snapshot.\n\n" + HOW_TO_PUBLISH,
)  # fmt: skip
broker.publisher(
    topics.ingest, schema=SnapshotChunk, title=f"{topics.ingest}:Chunk",
    description="One slice of the snapshot file, in order of `index` (0-based).",
)  # fmt: skip
broker.publisher(
    topics.events, schema=Event, title=f"{topics.events}:Event",
    description="Lifecycle events per school (key: school_id): audit.completed, snapshot.released, "
    "snapshot.incomplete, validation.completed, report.ready. Ids only, never personal data.",
)  # fmt: skip
broker.publisher(
    topics.deadletter, schema=DeadLetter, title=f"{topics.deadletter}:DeadLetter",
    description="An ingest message that was not handled, kept whole (base64) with the reason: oversized, "
    "invalid_json, unknown_schema_version, invalid_school_id, invalid_envelope, invalid_chunk, "
    "snapshot_too_large (the manifest's size_bytes is over the limit; its chunks are dropped), chunk_count_mismatch, "
    "chunk_checksum_mismatch, size_mismatch, checksum_mismatch, unreadable_snapshot.",
)  # fmt: skip

app = FastStream(
    broker,
    specification=AsyncAPI(
        title="schoolmig ingest contract",
        version="1",
        description="How any Kafka client hands a school's browser data to schoolmig, and what it hears back.",
    ),
)
