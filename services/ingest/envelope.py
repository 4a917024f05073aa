"""Reading one ingest message into an envelope, or a precise reason it cannot be one. Pure.

Everything a client may send is read defensively (``shared.source.jsonsafe``): whatever the
bytes, the answer is an envelope or a rejection, never an exception.
The reasons are what a client's developer needs to fix their producer: ``oversized``,
``invalid_json``, ``too_deep``, ``unknown_schema_version``, ``invalid_school_id``, ``invalid_envelope``
(with the offending fields, never their values), ``invalid_chunk``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from shared.source import jsonsafe
from shared.wire.messages import (
    INGEST_ENVELOPE,
    INGEST_KINDS,
    MAX_CHANGES_PER_MESSAGE,
    MAX_INGEST_MESSAGE_BYTES,
    SCHOOL_ID_PATTERN,
    ChangeBatch,
    FieldError,
    LocalCleared,
    SnapshotChunk,
    SnapshotManifest,
    error_summary,
    field_errors,
)

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
ENVELOPE_DEPTH = 4  # a manifest is 2 levels deep (its list of chunk hashes)


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str
    errors: list[FieldError] = field(default_factory=list)
    """Each rule broken, field by field (``invalid_envelope``)."""


def _skeleton(document: object) -> object:
    """The envelope without the records a change message carries: those are checked one by
    one (``services.ingest.changes``), so one bad record is quarantined, not the whole message."""
    if isinstance(document, dict) and document.get("kind") == "changes" and isinstance(document.get("changes"), list):
        changes = [{**c, "record": None} if isinstance(c, dict) else c for c in document["changes"]]
        return {**document, "changes": changes}
    return document


def read_envelope(body: bytes) -> SnapshotManifest | SnapshotChunk | ChangeBatch | LocalCleared | Rejection:
    if len(body) > MAX_INGEST_MESSAGE_BYTES:
        return Rejection("oversized", f"{len(body)} bytes; the limit is {MAX_INGEST_MESSAGE_BYTES} (send chunks)")
    try:
        document = jsonsafe.load(body)
    except jsonsafe.JsonRefused as exc:
        return Rejection(exc.reason, f"the message is {exc.detail}")
    if (why := jsonsafe.unrepresentable(_skeleton(document), max_depth=ENVELOPE_DEPTH)) is not None:
        return Rejection("invalid_envelope", f"the message cannot be stored: {why}")
    if isinstance(document, dict):
        version = document.get("schema_version")
        if version is not None and (type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS):
            why = f"schema_version {str(version)[:20]!r} is not supported"
            allowed = [str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS)]
            return Rejection(
                "unknown_schema_version",
                f"{why}; supported: {', '.join(allowed)}",
                [FieldError(field="schema_version", rule="unknown_schema_version", message=why, allowed=allowed)],
            )
        school = document.get("school_id")
        if school is not None and not (isinstance(school, str) and re.match(SCHOOL_ID_PATTERN, school)):
            why = f"school_id must match {SCHOOL_ID_PATTERN}"
            return Rejection(
                "invalid_school_id", why, [FieldError(field="school_id", rule="string_pattern_mismatch", message=why)]
            )
    try:
        envelope = INGEST_ENVELOPE.validate_python(document)
    except ValidationError as exc:
        errors = field_errors(exc, kinds=INGEST_KINDS)
        return Rejection("invalid_envelope", error_summary(errors), errors)
    if isinstance(envelope, SnapshotChunk):
        try:
            base64.b64decode(envelope.data_b64, validate=True)
        except (binascii.Error, ValueError):
            return Rejection("invalid_chunk", "data_b64 is not valid base64")
    if isinstance(envelope, SnapshotManifest) and len(envelope.chunk_sha256) != envelope.chunk_count:
        why = "chunk_sha256 must list one hash per chunk (chunk_count of them)"
        return Rejection("invalid_envelope", why, [FieldError(field="chunk_sha256", rule="chunk_count_mismatch", message=why)])
    return envelope


@dataclass(frozen=True)
class Sender:
    """What a refused message says about who sent it, read leniently (for the answer to it)."""

    school_id: str | None = None
    kind: str | None = None
    snapshot_id: str | None = None
    client_id: str | None = None
    seqs: list[int] = field(default_factory=list)


def _text(value: object, pattern: str) -> str | None:
    return value if isinstance(value, str) and re.match(pattern, value) else None


def sender_of(body: bytes, key: bytes | None) -> Sender:
    """The school (the message's, else its Kafka key), kind, snapshot or client and seqs a
    message names, as far as they can be read; never raises."""
    document: object = None
    if len(body) <= MAX_INGEST_MESSAGE_BYTES:
        try:
            document = jsonsafe.load(body)
        except jsonsafe.JsonRefused:
            document = None
    found = document if isinstance(document, dict) else {}
    from_key = key.decode("utf-8", "replace") if key else None
    changes = found.get("changes")
    return Sender(
        school_id=_text(found.get("school_id"), SCHOOL_ID_PATTERN) or _text(from_key, SCHOOL_ID_PATTERN),
        kind=found.get("kind") if found.get("kind") in INGEST_KINDS else None,
        snapshot_id=_text(found.get("snapshot_id"), r"^[A-Za-z0-9_.-]{1,64}$"),
        client_id=_text(found.get("client_id"), r"^[A-Za-z0-9_-]{1,40}$"),
        seqs=[
            c["seq"]
            for c in (changes if isinstance(changes, list) else [])[:MAX_CHANGES_PER_MESSAGE]
            if isinstance(c, dict) and type(c.get("seq")) is int
        ],
    )
