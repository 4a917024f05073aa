"""The public wire contract as a FastStream app, for its AsyncAPI document only.

``make docs`` renders it to ``docs/asyncapi.yaml`` (``faststream docs gen``), so a Java,
Node or kcat client can publish without reading Python; a test keeps the file current.
It declares what a *client* sees: what to publish to the ingest topic, what it reads back
(its school's mode, the outcome of each of its writes), and what operators read (events,
dead letters). Nothing here connects to a broker. ``python -m schoolmig.contract DIR``
writes the record schemas (``shared.mapping.schemas``) to ``DIR`` (``make docs``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared.catalog.domains import DEFAULT_KEY_ALIASES, EXPORT_KEYS, LOCALSTORAGE_KEYS, METADATA_KEYS, Domain
from shared.mapping.schemas import record_schema
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.wire.messages import (
    MAX_CHANGES_PER_MESSAGE,
    MAX_CHUNK_BYTES,
    MAX_INGEST_MESSAGE_BYTES,
    Change,
    ChangeBatch,
    ClientOutcome,
    DeadLetter,
    Event,
    LocalCleared,
    SchoolMode,
    SnapshotChunk,
    SnapshotManifest,
)

topics = Topics.from_settings(Settings(topic_prefix="schoolmig", ingest_topic=None))

WIRE = """\
**On the wire.** Every message is one JSON object (UTF-8), Kafka key `<school_id>`.
Headers a client sends: `content-type: application/json` (optional) and `correlation_id`
(optional, any text up to 200 characters): an answer to the message (a `message.refused` on
the outcomes topic, its dead letter) carries it back. Headers schoolmig sends: `content-type`,
`correlation_id` (on an answer, the client's), and `schoolmig-auth` (the services' signature,
`v1;<principal>;<hmac>`: clients can ignore it). Compression: clients may publish
uncompressed, gzip, snappy, lz4 or zstd; the topics clients read (`schoolmig.control.modes`,
`schoolmig.outcomes`) are written uncompressed or gzip (`SCHOOLMIG_CLIENT_COMPRESSION`), which
the standard clients of JavaScript (kafkajs), Python and Java read without plug-ins; the
services' own topics use `SCHOOLMIG_COMPRESSION` (zstd by default).

**Every rule a message must follow** (a message that breaks one is dead-lettered and answered
with a `message.refused` naming the field, the rule and the allowed values):
- `kind` is required: `snapshot.manifest`, `snapshot.chunk`, `changes` or `local.cleared`; `schema_version` is 1 (or absent);
- `school_id`: 1-64 of `A-Za-z0-9_.-`, starting with a letter or digit;
- `snapshot_id`: 1-64 of `A-Za-z0-9_.-`, never starting with `chg.` (rule `snapshot_id_reserved`);
- a message is at most 524,288 bytes (`oversized`); JSON nested at most 4 levels outside a change's `record`;
- a manifest's `chunk_sha256` lists `chunk_count` hashes; chunks carry valid base64;
- `timezone` (manifest, changes) is an IANA zone the time-zone database knows (`unknown_timezone`);
- changes: 1-500 per message, one client each; no `seq` twice in one message (`seq_repeated`);
  a create or update carries `record` (`record_required_for_create_and_update`) whose `id` equals
  `record_id` (`record_id_mismatch`); a delete carries none (`delete_carries_no_record`);
  `domain` is one of the ten; `source_ts` has an offset, between 1900 and 9000, and is not
  ahead of the broker's clock by more than SCHOOLMIG_MAX_CLOCK_AHEAD_S (else it is quarantined);
- a record's fields: `docs/schemas/records/<domain>.json` (a value they refuse quarantines the
  record with the field and the rule; nothing is truncated or guessed).

**Dates.** The app writes dates through `toISOString()`. Each school has one time zone: an
operator's (`schoolmig set-timezone`, `POST /schools/{id}/timezone`), else the one its clients
report (`timezone` in a manifest or a changes message: the browser's
`Intl.DateTimeFormat().resolvedOptions().timeZone`), else SCHOOLMIG_DEFAULT_TIMEZONE. It is fixed
when the school's first records are mapped. A moment in a date-only field is that zone's
calendar date; a date-only string stays as written. The exact string is kept: export gives
it back byte for byte.
"""
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
    description="First message of a snapshot.\n\n" + HOW_TO_PUBLISH + "\n\n" + WIRE,
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
outbox that keeps changes while the broker is away. Where each change stands is on the
outcomes topic (`change.outcome`) and at `GET /schools/<id>/changes/<client_id>/<seq>`."""

broker.publisher(
    topics.ingest,
    schema=ChangeBatch,
    title=f"{topics.ingest}:Changes",
    description="Live changes of a school's records (the plan's HybridDataAdapter).\n\n" + HOW_TO_CHANGE,
)
broker.publisher(
    topics.ingest,
    schema=LocalCleared,
    title=f"{topics.ingest}:LocalCleared",
    description="The plan's last step, from each device: once the school's mode says `clear_local` (its cutover "
    "stood SCHOOLMIG_LOCAL_GRACE_S without rollback), the client archives its local copy to a file on the device, "
    "clears it, and says so here (key: school_id). `client_id` is the device's, as its snapshots (`device_id`) and "
    "changes name it. Kept once per device; refused with an answer (`clear_not_asked`, `clear_unknown_device`) "
    "when the mode does not ask for it or no snapshot or change of the school came from that client. "
    "The SDK's `HybridClient.clean_up_if_told` does it.",
)
broker.publisher(
    topics.control,
    schema=SchoolMode,
    title=f"{topics.control}:Mode",
    description="What a school's clients must do now (compacted: the latest per school_id key). Clients read it "
    "(or poll GET /schools/<id>/mode): `localStorage` (before the hybrid phase), `hybrid` (publish every change), "
    "`api` (cut over: write through the API; changes are refused); `maintenance` true: hold writes; "
    "`clear_local` true: archive the local copy to a file, clear it and publish `local.cleared`. "
    "Uncompressed or gzip (SCHOOLMIG_CLIENT_COMPRESSION); headers content-type, schoolmig-auth.",
)
broker.publisher(
    topics.outcomes,
    schema=ClientOutcome,
    title=f"{topics.outcomes}:Outcome",
    description="What became of a client's writes, keyed by school_id (the client principal may read it): "
    "`report.ready` for every snapshot (validated, synced, blocked at the audit gate, superseded, unchanged, "
    "refused with its reason, incomplete); `change.outcome` for every change, per (client_id, seq): pending, "
    "applied, waiting (and for what), superseded or deleted (by which write), quarantined (and why), published "
    "when it settles and whenever an open one moves; `message.refused` for every message of theirs that was "
    "not taken, with the field, rule and allowed values, under the message's own correlation_id. "
    "Uncompressed or gzip (SCHOOLMIG_CLIENT_COMPRESSION); headers content-type, correlation_id, schoolmig-auth.",
)
broker.publisher(
    topics.events,
    schema=Event,
    title=f"{topics.events}:Event",
    description="Lifecycle events per school (key: school_id), for operators: audit.completed, snapshot.released "
    "(fanned out), snapshot.withheld (kept, not fanned out: superseded or unchanged), snapshot.incomplete, "
    "school.rejected, validation.completed, report.ready, school.mode. Ids only, never personal data.",
)
broker.publisher(
    topics.deadletter,
    schema=DeadLetter,
    title=f"{topics.deadletter}:DeadLetter",
    description="A message that was not handled, for operators, kept whole (base64) with where it was read "
    "(topic, partition, offset), the stage that refused it, the school, the sender's correlation_id and each "
    "rule it broke. Reasons for ingest messages: oversized, invalid_json, too_deep, unknown_schema_version, "
    "invalid_school_id, invalid_envelope, invalid_chunk, chunk_hash_mismatch, too_many_candidates, "
    "snapshot_too_large (its chunks are dropped), school_in_maintenance, school_cut_over, chunk_count_mismatch, "
    "chunk_checksum_mismatch, size_mismatch, checksum_mismatch, unreadable_snapshot, conflicting_change, "
    "clear_not_asked, clear_unknown_device. "
    "Each is also answered to the client on the outcomes topic (message.refused).",
)


def _record_schemas(schema: dict[str, Any]) -> None:
    """A change's ``record`` per ``domain``: the record schemas (``shared.mapping.schemas``) inline."""
    schema["allOf"] = [
        {
            "if": {"properties": {"domain": {"const": d.value}}, "required": ["domain"]},
            "then": {"properties": {"record": {"anyOf": [_inline(record_schema(d)), {"type": "null"}]}}},
        }
        for d in Domain
    ]


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id")}


# The document only: the wire model stays a plain object (each record is mapped, or quarantined, on its own).
Change.model_config["json_schema_extra"] = _record_schemas
Change.model_rebuild(force=True)

app = FastStream(
    broker,
    specification=AsyncAPI(
        title="schoolmig ingest contract",
        version="1",
        description="How any Kafka client hands a school's browser data to schoolmig, and what it hears back.",
    ),
)


def write_record_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for domain in Domain:
        path = directory / f"{domain.value}.json"
        path.write_text(json.dumps(record_schema(domain), indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_record_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas/records")):
        print(written_path)
