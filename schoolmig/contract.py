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

from shared.domains import DEFAULT_KEY_ALIASES, EXPORT_KEYS, LOCALSTORAGE_KEYS, METADATA_KEYS, Domain
from shared.messages import (
    MAX_CHANGES_PER_MESSAGE,
    MAX_CHUNK_BYTES,
    MAX_INGEST_MESSAGE_BYTES,
    ChangeBatch,
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
go to the dead-letter topic with a reason.

`taken_at` is when the browser data was read, by the reading client's clock (never the
app's `mockDataMetadata.lastUpdated`, which only some of its saves touch: send that as
`app_last_updated` if you want it kept). `device_id` names the browser or installation
it was read from, the same id its changes carry as `client_id` (omitted: the school's one
unnamed device). Name every browser: a school's data is the union of its devices' copies,
and each record's version follows from its own device's history (content unchanged since
the device's previous snapshot keeps its version; a record the device held and no longer
holds is deleted by it; a record it never held is left alone). A device's snapshots are
ordered by `(taken_at, snapshot_id)`: one read before that device's newest released one is
superseded (kept, not migrated); another device's snapshot never supersedes it. Publish a
school's snapshots oldest reading first. A file byte for byte identical to its device's latest
snapshot is reported unchanged (its report is that snapshot's, with `unchanged_of`).
A good `snapshot_id` is the reading's own (the SDK's: `<read time>-<hash of school,
device, read time and content>`), so a retry is the same snapshot; it never starts
with `chg.`.

""" + "\n".join(
    [
        "The keys read as records, per format; each format also reads the other's keys (any other key whose value",
        "looks like records, an array of objects",
        "or an object holding such arrays, is a critical audit finding: the school waits at the audit gate",
        "until an operator maps the key, `SCHOOLMIG_KEY_ALIASES`, or overrides the audit; other keys are noted):",
        "",
        "| domain | localStorage dump | MockDataService export | also read (default aliases) |",
        "|---|---|---|---|",
        *(
            f"| {d.value} | {', '.join(f'`{k}`' for k, v in LOCALSTORAGE_KEYS.items() if v is d) or '–'}"
            f" | {', '.join(f'`{k}`' for k, v in EXPORT_KEYS.items() if v is d) or '–'}"
            f" | {', '.join(f'`{k}`' for k, v in DEFAULT_KEY_ALIASES.items() if v is d) or '–'} |"
            for d in Domain
        ),
        "",
        f"Metadata keys, never records: {', '.join(f'`{k}`' for k in sorted(METADATA_KEYS))}.",
    ]
)

broker.publisher(
    topics.ingest,
    schema=SnapshotManifest,
    title=f"{topics.ingest}:Manifest",
    description="First message of a snapshot.\n\n" + HOW_TO_PUBLISH,
)
broker.publisher(
    topics.ingest,
    schema=SnapshotChunk,
    title=f"{topics.ingest}:Chunk",
    description="One slice of the snapshot file, in order of `index` (0-based).",
)
HOW_TO_CHANGE = f"""\
While a school is in the hybrid phase (its mode, on the compacted control topic or from the
coordinator's `GET /schools/<id>/mode`, is `hybrid`), the app publishes every create,
update and delete it makes, with the Kafka key `<school_id>`: one or more changes (at most
{MAX_CHANGES_PER_MESSAGE}) of one client per message. `record` is the whole record after a create or update (its
`id` equal to `record_id`), absent for a delete. `source_ts` is when it was made (the
record's `updatedAt`, else the client's clock); `seq` is the client's own counter, a new
number for every change, never reused. Changes of a record are applied in the order of
(source_ts, client_id, seq), whatever order they arrive in and however often: the greatest
wins; at equal times a change wins over a snapshot taken then. A delete is a soft delete (the
rows stay, marked deleted) that a later create or update revives; an older change arriving
after a newer one, or after a newer snapshot that no longer has the record, changes nothing.
A record the pipeline cannot carry is quarantined with its change id `chg.<client_id>.<seq>`;
a `seq` published again with other content is dead-lettered (`conflicting_change`). Once the
school runs on the API, changes are dead-lettered (`school_cut_over`) and a `school.rejected`
event says so. The SDK's `schoolmig.hybrid.HybridClient` does all of this, with a durable
outbox that keeps changes while the broker is away."""

broker.publisher(
    topics.ingest,
    schema=ChangeBatch,
    title=f"{topics.ingest}:Changes",
    description="Live changes of a school's records (the plan's HybridDataAdapter).\n\n" + HOW_TO_CHANGE,
)
broker.publisher(
    topics.events,
    schema=Event,
    title=f"{topics.events}:Event",
    description="Lifecycle events per school (key: school_id): audit.completed, snapshot.released, "
    "snapshot.incomplete, validation.completed, report.ready. Ids only, never personal data.",
)
broker.publisher(
    topics.deadletter,
    schema=DeadLetter,
    title=f"{topics.deadletter}:DeadLetter",
    description="An ingest message that was not handled, kept whole (base64) with the reason: oversized, "
    "invalid_json, unknown_schema_version, invalid_school_id, invalid_envelope, invalid_chunk, "
    "snapshot_too_large (the manifest's size_bytes is over the limit; its chunks are dropped), chunk_count_mismatch, "
    "chunk_checksum_mismatch, size_mismatch, checksum_mismatch, unreadable_snapshot, conflicting_change, school_cut_over.",
)

app = FastStream(
    broker,
    specification=AsyncAPI(
        title="schoolmig ingest contract",
        version="1",
        description="How any Kafka client hands a school's browser data to schoolmig, and what it hears back.",
    ),
)
