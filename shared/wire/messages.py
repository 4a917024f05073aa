"""Pydantic models for every message on every topic.

The ingest envelopes are the public contract (versioned by ``schema_version``); the
others are internal between services. All carry ``school_id`` so any consumer can key,
filter and account per school.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from shared.catalog.domains import Domain
from shared.catalog.tables import TABLES
from shared.catalog.timezones import AS_WRITTEN, ZONE_PATTERN, check_zone

SCHOOL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SchoolId = Annotated[str, Field(pattern=SCHOOL_ID_PATTERN)]
SnapshotId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
CHANGE_ID_PREFIX = "chg."  # a change stands where a snapshot id does: a client's snapshot never starts so


Zone = Annotated[
    str,
    Field(
        pattern=ZONE_PATTERN,
        description="An IANA time zone (Europe/Skopje): the browser's "
        "Intl.DateTimeFormat().resolvedOptions().timeZone. The school's zone reads a moment written into a "
        "date-only field (toISOString()) as that zone's calendar date.",
    ),
]


def _known_zone(zone: str | None) -> str | None:
    if zone is None:
        return None
    try:
        return check_zone(zone)
    except ValueError:
        raise PydanticCustomError(
            "unknown_timezone", "not an IANA time zone the time-zone database knows (e.g. Europe/Skopje, UTC)"
        ) from None


def _client_snapshot_id(snapshot_id: str) -> str:
    if snapshot_id.startswith(CHANGE_ID_PREFIX):
        raise PydanticCustomError(
            "snapshot_id_reserved",
            "a snapshot id must not start with the prefix {prefix} (ids that do name changes)",
            {"prefix": CHANGE_ID_PREFIX},
        )
    return snapshot_id


Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

#: Chunks carry base64 of at most this many raw bytes, so a chunk message stays far
#: below 512 KiB (base64 adds a third) and below Kafka's default 1 MB limit.
MAX_CHUNK_BYTES = 360 * 1024
MAX_INGEST_MESSAGE_BYTES = 512 * 1024
#: A record's position in its domain's array (-1: a whole localStorage value); an int4 in PostgreSQL.
RecordIndex = Annotated[int, Field(ge=-1, le=2**31 - 1)]
#: A moment from outside, within what PostgreSQL's timestamptz and Python's datetime can
#: both hold after any UTC offset (a year-1 time with a positive offset overflows in Python).
SourceTime = Annotated[datetime, Field(gt=datetime(1900, 1, 1, tzinfo=UTC), lt=datetime(9000, 1, 1, tzinfo=UTC))]
ClientId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
UNNAMED_DEVICE = ""
DeviceId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{0,40}$",
        description="The browser or installation the data was read from: a stable id per device, the same a "
        "client's changes carry as client_id (empty: the school's one unnamed device).",
    ),
]


#: schoolmig's own rules broken by a whole object, and the field each is about.
_RULE_FIELD = {
    "record_required_for_create_and_update": "record",
    "delete_carries_no_record": "record",
    "record_id_mismatch": "record.id",
    "seq_repeated": "seq",
}


def field_errors(exc: ValidationError, limit: int = 20, *, kinds: list[str] | None = None) -> list[FieldError]:
    """Each rule a message broke: the field (dotted), the rule, the rule in words and the
    allowed values where they are a list. Never the value sent: it may be personal data.
    ``kinds``: the tags of a union read by its ``kind`` (their names lead no field's path)."""
    out = []
    for e in exc.errors(include_url=False, include_input=False)[:limit]:
        path = [str(p) for p in e["loc"]]
        if kinds and path and path[0] in kinds:
            path = path[1:]
        if (suffix := _RULE_FIELD.get(e["type"])) is not None:
            path.append(suffix)
        ctx = e.get("ctx") or {}
        expected = ctx.get("expected") or ctx.get("expected_tags")
        allowed = re.findall(r"'([^']*)'", str(expected)) if expected else None
        message = str(e["msg"])
        if e["type"] in ("union_tag_not_found", "union_tag_invalid"):  # pydantic's own words quote the tag sent
            path.append(str(ctx.get("discriminator", "kind")).strip("'")[:40])
            allowed = allowed or kinds
            message = "the message's kind is missing or not one of the allowed"
        out.append(
            FieldError(
                field=_bounded(".".join(path) or "(message)", 200),
                rule=e["type"],
                message=_bounded(message, 300),
                allowed=[_bounded(a, 80) for a in allowed[:50]] if allowed else None,
            )
        )
    return out


def _bounded(text: str, limit: int) -> str:
    """At most ``limit`` characters: a client's key or tag can be as long as its message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_summary(exc: ValidationError | list[FieldError], empty: str = "invalid") -> str:
    """Each broken rule in one line: field, rule, the rule in words (never the value sent)."""
    errors = exc if isinstance(exc, list) else field_errors(exc, limit=5)
    parts = [f"{f.field}: {f.rule} ({f.message}{'; allowed: ' + ', '.join(f.allowed) if f.allowed else ''})" for f in errors[:5]]
    return _bounded("; ".join(parts), 1500) or empty


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _kind_required(schema: dict[str, Any]) -> None:
    """``kind`` (the envelope's tag) is required on the wire: a message without it is refused."""
    schema["required"] = ["kind", *[r for r in schema.get("required", []) if r != "kind"]]


class _Envelope(_Model):
    """A message a client publishes to the ingest topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_kind_required)


# --------------------------------------------------------------------------- ingest (public)


class SnapshotFormat(StrEnum):
    LOCALSTORAGE_DUMP = "localstorage_dump"
    """A JSON object mapping each localStorage key to its *string* value."""
    MOCKDATA_EXPORT = "mockdata_export"
    """MockDataService ``exportData()``: a JSON object of arrays."""


ClientSnapshotId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The snapshot's id, the same in its manifest and every chunk: 1-64 letters, digits, '_', '.' or '-'; "
        f"never starting with {CHANGE_ID_PREFIX} (those name changes).",
    ),
]


class SnapshotManifest(_Envelope):
    """Announces a snapshot: what file, how big, how it was cut into chunks."""

    kind: Literal["snapshot.manifest"] = "snapshot.manifest"
    schema_version: Literal[1] = 1
    school_id: SchoolId
    snapshot_id: ClientSnapshotId
    format: SnapshotFormat
    taken_at: SourceTime = Field(
        description="When the browser data was read, by the reading client's clock (the CLI: --taken-at, else the "
        "file's modification time). The snapshot's place among the device's snapshots; never the app's lastUpdated."
    )
    device_id: DeviceId = UNNAMED_DEVICE
    app_last_updated: SourceTime | None = Field(
        default=None, description="The app's own mockDataMetadata.lastUpdated, if the file has one: kept, never the order."
    )
    timezone: Zone | None = Field(
        default=None,
        description="The reading browser's time zone (Intl.DateTimeFormat().resolvedOptions().timeZone). The school's "
        "zone, unless an operator set one or an earlier write of the school fixed it; another zone is an audit note.",
    )
    size_bytes: int = Field(ge=0, le=2**62)
    sha256: Sha256Hex = Field(description="SHA-256 of the whole file.")
    chunk_count: int = Field(ge=1, le=2**31 - 1)
    chunk_sha256: list[Sha256Hex] = Field(description="SHA-256 of each chunk's bytes, in order.")

    _snapshot_id = field_validator("snapshot_id")(_client_snapshot_id)
    _timezone = field_validator("timezone")(_known_zone)


class SnapshotChunk(_Envelope):
    """One slice of the file's bytes, base64-encoded."""

    kind: Literal["snapshot.chunk"] = "snapshot.chunk"
    schema_version: Literal[1] = 1
    school_id: SchoolId
    snapshot_id: ClientSnapshotId
    index: int = Field(ge=0, le=2**31 - 2)
    data_b64: str

    _snapshot_id = field_validator("snapshot_id")(_client_snapshot_id)


class ChangeOp(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


#: Who made a change: one browser (or app install) of a school; with ``seq``, it names the change.
MAX_CHANGES_PER_MESSAGE = 500


class Change(_Model):
    """One create, update or delete of one record, as the app made it (the plan's
    ``HybridDataAdapter``). ``record`` is the whole record after the change (create, update);
    a delete carries none. Changes of a record are ordered by ``(source_ts, client_id, seq)``:
    the greatest wins, whatever order they arrive in (see ``shared.ledger.versions``)."""

    op: ChangeOp
    domain: Domain
    record_id: str = Field(min_length=1, max_length=200, description="The record's ``id``, as the app holds it.")
    record: dict[str, Any] | None = Field(
        default=None,
        description="create, update: the whole record after it (required), its id equal to record_id; delete: absent. "
        "Its fields per domain: docs/schemas/records/<domain>.json (JSON Schema).",
    )
    source_ts: SourceTime = Field(description="When it was made: the record's ``updatedAt``, or the client's clock.")
    seq: int = Field(
        ge=0,
        le=2**62,
        description="The client's own counter: every change of one client has its own, never reused (one message "
        "never repeats a seq; a seq sent again with other content is refused as conflicting_change).",
    )

    @model_validator(mode="after")
    def _record_matches(self) -> Change:
        if self.op is ChangeOp.DELETE:
            if self.record is not None:
                raise PydanticCustomError("delete_carries_no_record", "a delete carries no record: leave record out")
        elif self.record is None:
            raise PydanticCustomError(
                "record_required_for_create_and_update", "a create or an update carries the whole record after it"
            )
        else:
            raw = self.record.get("id")
            if isinstance(raw, bool) or not isinstance(raw, (str, int)) or str(raw).strip() != self.record_id:
                raise PydanticCustomError("record_id_mismatch", "the record's id must equal record_id (as text)")
        return self


class ChangeBatch(_Envelope):
    """One or more changes of one school by one client, on the ingest topic (public)."""

    kind: Literal["changes"] = "changes"
    schema_version: Literal[1] = 1
    school_id: SchoolId
    client_id: ClientId
    changes: list[Change] = Field(min_length=1, max_length=MAX_CHANGES_PER_MESSAGE)
    timezone: Zone | None = Field(
        default=None, description="The client's time zone, as for a manifest (HybridClient: the browser's)."
    )

    _timezone = field_validator("timezone")(_known_zone)

    @model_validator(mode="after")
    def _one_change_per_seq(self) -> ChangeBatch:
        if len({c.seq for c in self.changes}) != len(self.changes):
            raise PydanticCustomError("seq_repeated", "each change of a client has its own seq: a message repeats one")
        return self


class LocalCleared(_Envelope):
    """A client archived its local copy to a file and cleared it, once the school's mode said so (``clear_local``)."""

    kind: Literal["local.cleared"] = "local.cleared"
    schema_version: Literal[1] = 1
    school_id: SchoolId
    client_id: ClientId
    announced_at: AwareDatetime = Field(
        description="The `updated_at` of the school.mode (clear_local) this answers: a report for an earlier one is refused."
    )
    cleared_at: AwareDatetime = Field(description="When the client cleared its local copy, with its offset.")
    archived_records: int = Field(ge=0, le=2**31 - 1, description="How many records the archive holds.")
    archive_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The archive file's SHA-256 (it stays with the device).")


IngestEnvelope = Annotated[SnapshotManifest | SnapshotChunk | ChangeBatch | LocalCleared, Field(discriminator="kind")]
INGEST_KINDS = ["snapshot.manifest", "snapshot.chunk", "changes", "local.cleared"]
INGEST_ENVELOPE: TypeAdapter[SnapshotManifest | SnapshotChunk | ChangeBatch | LocalCleared] = TypeAdapter(IngestEnvelope)


class ChangeMeta(_Model):
    """What makes a record of the pipeline a change, not a snapshot's: its version and kind."""

    op: ChangeOp
    client_id: ClientId
    seq: int
    source_ts: datetime

    @property
    def change_id(self) -> str:
        """Stands where a snapshot id does (quarantine, provenance): ``chg.<client>.<seq>``."""
        return change_id(self.client_id, self.seq)


def change_id(client_id: str, seq: int) -> str:
    return f"{CHANGE_ID_PREFIX}{client_id}.{seq}"


class FieldError(_Model):
    """One rule a message broke: where, which rule, and what would have been accepted."""

    field: str = Field(description="Where in the message, dotted (changes.0.record.id); '(message)' for the whole.")
    rule: str = Field(
        description="The rule's code (pydantic's error type, e.g. missing, enum, string_pattern_mismatch, "
        "or one of schoolmig's: record_required_for_create_and_update, record_id_mismatch, delete_carries_no_record, "
        "seq_repeated, snapshot_id_reserved, unknown_timezone)."
    )
    message: str = Field(description="The rule in words; never the value sent (it may be personal data).")
    allowed: list[str] | None = Field(default=None, description="The values the field may take, when they are a list.")


class DeadLetter(_Model):
    """A message that could not be handled, kept whole with the reason (as Kafka Connect's
    error reporters keep theirs: where it was read, which stage, what failed)."""

    reason: str
    message: str
    topic: str
    partition: int
    offset: int
    payload_b64: str
    payload_ref: str | None = Field(
        default=None, description="Where the payload is when it was too large to travel here (then payload_b64 is empty)."
    )
    error_class: str | None = Field(default=None, description="The exception a handler failed with, if one did.")
    stage: str | None = Field(default=None, description="The service that refused it (ingest, transform, loader, …).")
    school_id: str | None = Field(default=None, description="The school the message names, when it could be read.")
    correlation_id: str | None = Field(
        default=None, description="The refused message's own correlation_id header, as its producer sent it."
    )
    errors: list[FieldError] = Field(default_factory=list, description="Each rule the message broke, field by field.")


# --------------------------------------------------------------------------- records


class RawRecord(_Model):
    """One source record as read from the browser, before mapping."""

    school_id: SchoolId
    snapshot_id: SnapshotId
    domain: Domain
    index: int = Field(description="Position in the domain's array in the snapshot.")
    legacy_id: str | None
    source_ts: datetime
    record: Any
    default_ts: datetime | None = Field(
        default=None,
        description="The time given to a record without timestamps: the school's first snapshot's, so it is the "
        "same in every later snapshot (None: source_ts).",
    )
    hints: dict[str, str] = Field(
        default_factory=dict,
        description="What ingest resolved over the whole snapshot, e.g. classroom_id for a class without roomId.",
    )
    timezone: str = Field(default=AS_WRITTEN, description="The school's time zone (shared.catalog.timezones).")
    change: ChangeMeta | None = Field(default=None, description="Set when this is a change, not a snapshot's record.")


class TargetRow(_Model):
    table: str
    values: dict[str, Any]

    @field_validator("table")
    @classmethod
    def _known_table(cls, table: str) -> str:
        if table not in TABLES:
            raise ValueError("not a table of the target schema")
        return table

    @field_validator("values")
    @classmethod
    def _has_id(cls, values: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(values.get("id"), str):
            raise ValueError("a row needs its id")
        return values


class MappedRecord(_Model):
    """One source record mapped to its target rows (parents first)."""

    school_id: SchoolId
    snapshot_id: SnapshotId
    domain: Domain
    index: int
    legacy_id: str
    source_ts: datetime
    rows: list[TargetRow]
    change: ChangeMeta | None = Field(default=None, description="Set when this is a change (a delete has no rows).")


class Stage(StrEnum):
    INGEST = "ingest"
    TRANSFORM = "transform"
    LOADER = "loader"


class QuarantinedRecord(_Model):
    """A source record that was not migrated, with why, and the record itself."""

    school_id: SchoolId
    snapshot_id: SnapshotId
    domain: Domain
    index: RecordIndex
    legacy_id: str | None
    stage: Stage
    reason: str = Field(description="Machine-readable reason code.")
    message: str = Field(description="Human explanation; never personal data beyond ids.")
    payload: Any


# --------------------------------------------------------------------------- batches on the wire
#
# The unit on the internal topics is a *batch*: many records of one (school, snapshot,
# domain), keyed ``school/domain`` so one school's records of a domain keep their order on
# one partition. Each entry is still accounted, quarantined and written record by record;
# only the envelope is shared. A batch stays under ``Settings.max_batch_bytes`` (see
# ``shared.wire.batching``). Live changes (a later contract) ride the same envelope as a batch
# of one or more entries.


class RawEntry(_Model):
    """One source record inside a :class:`RawBatch`."""

    index: RecordIndex
    legacy_id: str | None
    record: Any
    hints: dict[str, str] = Field(default_factory=dict)
    change: ChangeMeta | None = None
    ts: datetime | None = Field(
        default=None,
        description="The record's version time when it is not the batch's source_ts (shared.ledger.devices).",
    )


class _RecordsBatch(_Model):
    """What every record of a batch has in common: one school's snapshot, one domain."""

    school_id: SchoolId
    snapshot_id: SnapshotId
    domain: Domain
    source_ts: datetime

    def _common(self) -> dict[str, Any]:
        return {"school_id": self.school_id, "snapshot_id": self.snapshot_id, "domain": self.domain, "source_ts": self.source_ts}


class RawBatch(_RecordsBatch):
    """Source records of one school's domain, as read from the browser, before mapping."""

    kind: Literal["raw.batch"] = "raw.batch"
    default_ts: datetime | None = None
    timezone: str = Field(
        default=AS_WRITTEN, description="The school's time zone (a batch without one: from before zones, dates as written)."
    )
    entries: list[RawEntry]

    def records(self) -> list[RawRecord]:
        """The entries as records (already validated as part of the batch)."""
        common = self._common()
        return [
            RawRecord.model_construct(
                **{**common, **_own_time(e.ts), **_as_change(e.change)},
                index=e.index,
                legacy_id=e.legacy_id,
                record=e.record,
                hints=e.hints,
                default_ts=self.default_ts,
                timezone=self.timezone,
            )
            for e in self.entries
        ]


class MappedEntry(_Model):
    """One source record's target rows inside a :class:`RowsBatch`."""

    index: RecordIndex
    legacy_id: str
    rows: list[TargetRow]
    change: ChangeMeta | None = None
    ts: datetime | None = None


class RowsBatch(_RecordsBatch):
    """Mapped records of one school's domain: each record's rows, parents first."""

    kind: Literal["rows.batch"] = "rows.batch"
    entries: list[MappedEntry]

    def records(self) -> list[MappedRecord]:
        common = self._common()
        return [
            MappedRecord.model_construct(
                **{**common, **_own_time(e.ts), **_as_change(e.change)}, index=e.index, legacy_id=e.legacy_id, rows=e.rows
            )
            for e in self.entries
        ]


def _own_time(ts: datetime | None) -> dict[str, Any]:
    """A snapshot's record whose version is older than its batch's time keeps its own."""
    return {} if ts is None else {"source_ts": ts}


def _as_change(change: ChangeMeta | None) -> dict[str, Any]:
    """A change entry's own identity and time, where a snapshot's record has its batch's."""
    if change is None:
        return {"change": None}
    return {"change": change, "snapshot_id": change.change_id, "source_ts": change.source_ts}


class QuarantineBatch(_Model):
    """Records some stage could not migrate, each with its reason and exact source."""

    kind: Literal["quarantine.batch"] = "quarantine.batch"
    school_id: SchoolId
    entries: list[QuarantinedRecord]


def quarantined(record: RawRecord | MappedRecord, *, stage: Stage, reason: str, message: str, payload: Any) -> QuarantinedRecord:
    """The quarantine entry for a record some stage could not migrate."""
    return QuarantinedRecord(
        school_id=record.school_id,
        snapshot_id=record.snapshot_id,
        domain=record.domain,
        index=record.index,
        legacy_id=record.legacy_id,
        stage=stage,
        reason=reason,
        message=message,
        payload=payload,
    )


# --------------------------------------------------------------------------- events


class AuditSummary(_Model):
    source_counts: dict[Domain, int]
    unknown_keys: list[str] = Field(description="Keys read as nothing whose values do not look like records (UI state).")
    unmapped_keys: dict[str, int] = Field(
        default_factory=dict,
        description="Keys read as nothing whose values look like records, with how many: a critical finding each.",
    )
    aliased_keys: dict[str, Domain] = Field(
        default_factory=dict, description="Keys read as a domain through an alias (SCHOOLMIG_KEY_ALIASES)."
    )
    duplicate_ids: dict[Domain, list[str]]
    corrupted: dict[Domain, int]
    findings: dict[str, int] = Field(default_factory=dict, description="Audit findings per type.")
    critical_findings: int = 0
    timezone: str | None = Field(default=None, description="The school's time zone its records were mapped in.")
    timezone_source: Literal["operator", "client", "default", "legacy"] | None = Field(
        default=None, description="Which rule gave it (shared.catalog.timezones): an operator's, a client's report, the default."
    )


class SnapshotReleased(_Model):
    """Ingest assembled every chunk to the announced SHA-256, stored its backups, audited and fanned it out."""

    type: Literal["snapshot.released"] = "snapshot.released"
    school_id: SchoolId
    snapshot_id: SnapshotId
    format: SnapshotFormat
    taken_at: datetime
    sha256: Sha256Hex
    backup_verified: bool
    audit: AuditSummary


class AuditCompleted(_Model):
    """The pre-migration audit of one snapshot. Findings name ids and fields, never personal data."""

    type: Literal["audit.completed"] = "audit.completed"
    school_id: SchoolId
    snapshot_id: SnapshotId
    summary: AuditSummary
    findings: list[dict[str, Any]] = Field(description="The first findings (all are in migration.audits).")
    findings_total: int


class SnapshotIncomplete(_Model):
    """A snapshot still missing parts after the timeout; it is not released."""

    type: Literal["snapshot.incomplete"] = "snapshot.incomplete"
    school_id: SchoolId
    snapshot_id: SnapshotId
    manifest_received: bool
    chunks_expected: int | None
    missing_chunks: list[int]
    waited_s: float


def operator_run_id(command_id: str) -> str:
    """The run an operator's ``validate`` command asks for: stored and shown, never taken as a
    school's sync validation (its phase does not move on it; automatic runs are UUIDs)."""
    return f"{OPERATOR_RUN_PREFIX}{command_id}"


OPERATOR_RUN_PREFIX = "op-"


class ValidationRequested(_Model):
    run_id: str
    school_id: SchoolId
    snapshot_id: SnapshotId
    changes_until: datetime | None = Field(
        default=None,
        description="The cut for changes: those ingest received before it are in the tables (a barrier proved it); "
        "records changed after it are left out of the comparison. None: the run's start.",
    )


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class FieldDifference(_Model):
    """One field that differs: in the school's terms (a source key) where the reverse mapping
    can say, else as ``table.column``. The values are personal data: they are stored with
    the run in PostgreSQL, never published (:meth:`ValidationCompleted.for_publishing`)."""

    field: str
    source: Any = None
    database: Any = None


class ValidationIssue(_Model):
    type: str
    severity: Severity
    domain: Domain
    record_id: str | None = None
    message: str
    fields: list[FieldDifference] = Field(default_factory=list)


class DomainValidation(_Model):
    domain: Domain
    total_records: int
    valid_records: int
    issues: list[ValidationIssue]
    issue_counts: dict[str, int] = Field(default_factory=dict, description="Issues per type, all of them.")
    issues_omitted: int = Field(default=0, description="Issues left out of this message (all are in the stored run).")

    def model_post_init(self, __context: Any) -> None:
        if self.issues and not self.issue_counts:  # filled whenever issues are listed
            for i in self.issues:
                self.issue_counts[i.type] = self.issue_counts.get(i.type, 0) + 1


class ValidationCompleted(_Model):
    type: Literal["validation.completed"] = "validation.completed"
    run_id: str
    school_id: SchoolId
    snapshot_id: SnapshotId
    ok: bool
    domains: list[DomainValidation]
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def for_publishing(self, max_issues_per_domain: int = 50) -> ValidationCompleted:
        """The result as published: bounded in size (the most severe issues first, counts of
        all), naming fields but never their values. The whole run stays in PostgreSQL."""
        rank = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
        domains = []
        for d in self.domains:
            kept = sorted(d.issues, key=lambda i: rank[i.severity])[:max_issues_per_domain]
            counts: dict[str, int] = {}
            for i in d.issues:
                counts[i.type] = counts.get(i.type, 0) + 1
            domains.append(
                d.model_copy(
                    update={
                        "issues": [
                            i.model_copy(update={"fields": [FieldDifference(field=f.field) for f in i.fields]}) for i in kept
                        ],
                        "issue_counts": counts,
                        "issues_omitted": len(d.issues) - len(kept),
                    }
                )
            )
        return self.model_copy(update={"domains": domains})


class ReportReady(_Model):
    """A snapshot's report is written (``migration.reports``; ``schoolmig report``): one for every
    snapshot a client published, whatever became of it. ``phase`` is where the school stands,
    or the snapshot's own end: ``superseded`` (read before its device's newer snapshot),
    ``unchanged`` (identical to its device's latest), ``refused`` (not taken: ``reason``),
    ``incomplete`` (parts missing after the timeout: no report is kept, a late part completes
    the snapshot and its own report follows)."""

    type: Literal["report.ready"] = "report.ready"
    school_id: SchoolId
    snapshot_id: SnapshotId
    phase: str
    reason: str | None = Field(default=None, description="Why the snapshot was not migrated, as a code, when it was not.")
    message: str | None = Field(default=None, description="The same in words (ids only).")
    device_id: str | None = Field(default=None, description="The device the snapshot was read from, when known.")


class SnapshotWithheld(_Model):
    """Ingest has the snapshot whole, verified and backed up, and did not fan it out: it was
    read before its device's newest released snapshot (``superseded``), or is byte for byte
    that device's latest (``unchanged``). Instead of ``snapshot.released``."""

    type: Literal["snapshot.withheld"] = "snapshot.withheld"
    school_id: SchoolId
    snapshot_id: SnapshotId
    withheld: Literal["superseded", "unchanged"]
    because_of: SnapshotId = Field(description="The device's newer snapshot, or the identical one.")
    device_id: str = UNNAMED_DEVICE


class ChangeOutcome(_Model):
    """Where one change a client sent stands (``shared.ledger.outcomes``), on the clients'
    outcomes topic: published when it first settles and whenever an open one (pending,
    waiting, quarantined) moves. ``GET /schools/{id}/changes/{client_id}/{seq}`` answers the same."""

    type: Literal["change.outcome"] = "change.outcome"
    school_id: SchoolId
    client_id: str
    seq: int
    change_id: str
    domain: Domain
    record_id: str
    op: ChangeOp
    source_ts: datetime
    outcome: Literal["pending", "applied", "waiting", "superseded", "deleted", "quarantined"]
    by: str | None = Field(default=None, description="superseded, deleted: the newer write (chg.<client>.<seq>, or a snapshot).")
    waiting_for: list[str] = Field(default_factory=list, description="waiting: the parent rows or unique values it waits for.")
    reason: str | None = Field(default=None, description="quarantined: why, as a code.")
    message: str | None = Field(default=None, description="quarantined: why, in words (ids only).")


class MessageRefused(_Model):
    """A message a client published to the ingest topic that was not taken, on the clients'
    outcomes topic (the dead letter keeps it whole for operators): the rule it broke, field
    by field, with the client's correlation id."""

    type: Literal["message.refused"] = "message.refused"
    school_id: str | None = Field(description="The school the message names, when it could be read.")
    kind: str | None = Field(default=None, description="snapshot.manifest, snapshot.chunk or changes, when it could be read.")
    snapshot_id: str | None = None
    client_id: str | None = None
    seqs: list[int] = Field(default_factory=list, description="changes: the seqs of the message.")
    correlation_id: str | None = Field(default=None, description="The message's own correlation_id header.")
    reason: str
    message: str
    errors: list[FieldError] = Field(default_factory=list)
    topic: str
    partition: int
    offset: int


#: What the clients' outcomes topic carries (``Topics.outcomes``).
ClientOutcome = Annotated[ReportReady | ChangeOutcome | MessageRefused, Field(discriminator="type")]


# --------------------------------------------------------------------------- coordination


class Barrier(_Model):
    """A marker sent through the pipeline: every message on a partition before it has been
    handled once it comes out the other end. ``origin`` says which upstream partition a
    copy came through (see ``shared.wire.barrier``)."""

    kind: Literal["barrier"] = "barrier"
    barrier_id: str
    school_id: SchoolId
    topic: str = Field(description="The topic this copy was sent to.")
    partition: int = Field(ge=0, description="The partition this copy was sent to.")
    origin: str = Field(default="coordinator", description="The path it came by: stage>topic:partition>…")


class Redrive(_Model):
    """Ask ingest to fan a released snapshot out again from its verified backup (what was in
    flight when a broker was lost never arrived). Harmless on a healthy school: every write
    is judged by version, every ledger line is idempotent."""

    kind: Literal["redrive"] = "redrive"
    redrive_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    school_id: SchoolId
    snapshot_id: SnapshotId
    reason: str
    key_aliases: dict[str, Domain] = Field(
        default_factory=dict,
        description="An operator's map-key: read these keys as these domains too; the snapshot is audited and "
        "released again with them (its audit records the mapping, actor and reason).",
    )
    issued_at: AwareDatetime = Field(
        description="When it was asked: ingest refuses one older than SCHOOLMIG_COMMAND_TTL_S, or further ahead of its "
        "clock than SCHOOLMIG_MAX_CLOCK_AHEAD_S (a replayed request would make it fan a whole school out again). "
        "Required: a request without it is not a re-drive.",
    )


class Mode(StrEnum):
    """Where a school's client reads and writes (the plan's migration modes)."""

    LOCAL_STORAGE = "localStorage"
    HYBRID = "hybrid"
    API = "api"


class SchoolMode(_Model):
    """On the compacted control topic, keyed by school: what clients of that school must do."""

    type: Literal["school.mode"] = "school.mode"
    school_id: SchoolId
    mode: Mode
    maintenance: bool = Field(description="Writes are held: the client must not write (ingest rejects).")
    phase: str
    reason: str
    updated_at: datetime
    clear_local: bool = Field(
        default=False,
        description="The cutover stood its grace period without rollback: each client archives its local copy to a file, "
        "clears it and says so (local.cleared).",
    )


class OperatorCommand(_Model):
    """An operator's command for one school, from the CLI or the HTTP API: cutover, rollback, an
    audit override, a re-drive, keys mapped, data conflicts accepted, its sync checked again
    (``replay``: writes held for a conflict tried again, then validated), its time zone set,
    or a validation run (``validate``: its result is stored under the command's id)."""

    action: Literal[
        "cutover", "rollback", "override_audit", "redrive", "map_key", "accept_conflict", "replay", "set_timezone", "validate"
    ]
    school_id: SchoolId
    snapshot_id: SnapshotId | None = Field(
        default=None,
        description="override_audit: the snapshot whose audit is overridden; redrive: the one to fan out again; "
        "map_key: the one waiting at the audit gate; validate: the one compared (default: the school's).",
    )
    key_aliases: dict[Annotated[str, Field(min_length=1, max_length=200)], Domain] = Field(
        default_factory=dict,
        max_length=100,
        description="map_key: localStorage keys of that snapshot holding records nobody maps, and the domain each "
        "is read as (for this school; SCHOOLMIG_KEY_ALIASES maps keys for all).",
    )
    records: list[Annotated[str, Field(pattern=r"^[a-z_]+/.{1,200}$")]] = Field(
        default_factory=list,
        max_length=1000,
        description="accept_conflict: the writes in quarantine for a conflict of the data to accept, as DOMAIN/ID "
        "(e.g. students/student-10).",
    )
    timezone: Zone | None = Field(
        default=None,
        description="set_timezone: the school's IANA time zone (shared.catalog.timezones); refused once its records were "
        "mapped in another.",
    )
    actor: str = Field(description="Who asked (an operator's name or a service), for the audit trail.")
    reason: str = Field(min_length=1, description="Written reason, kept in the audit trail.")
    command_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        pattern=r"^[A-Za-z0-9_-]{8,64}$",
        description="Unique per command: the coordinator acts on each once (a signed command replayed is refused).",
    )
    issued_at: AwareDatetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When it was signed: one older than SCHOOLMIG_COMMAND_TTL_S is refused as stale.",
    )

    _timezone = field_validator("timezone")(_known_zone)

    @model_validator(mode="after")
    def _zone_given(self) -> OperatorCommand:
        if self.action == "set_timezone" and self.timezone is None:
            raise PydanticCustomError("missing", "set_timezone names the zone (an IANA name, e.g. Europe/Skopje)")
        return self


class SchoolRejected(_Model):
    """Ingest refused a school's snapshot (its mode: maintenance or cut over; its size; parts that do not
    assemble), or a change once the school is cut over (``snapshot_id``: the change's id)."""

    type: Literal["school.rejected"] = "school.rejected"
    school_id: SchoolId
    snapshot_id: SnapshotId
    reason: str
    message: str


Event = Annotated[
    SnapshotReleased
    | SnapshotWithheld
    | AuditCompleted
    | SnapshotIncomplete
    | ValidationCompleted
    | ReportReady
    | SchoolMode
    | SchoolRejected,
    Field(discriminator="type"),
]
