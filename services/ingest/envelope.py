"""Reading one ingest message into an envelope, or a precise reason it cannot be one. Pure.

Everything a client may send is read defensively (``shared.jsonsafe``): whatever the
bytes, the answer is an envelope or a rejection, never an exception.
The reasons are what a client's developer needs to fix their producer: ``oversized``,
``invalid_json``, ``too_deep``, ``unknown_schema_version``, ``invalid_school_id``, ``invalid_envelope``
(with the offending fields, never their values), ``invalid_chunk``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from pydantic import ValidationError

from shared import jsonsafe
from shared.messages import (
    INGEST_ENVELOPE,
    MAX_INGEST_MESSAGE_BYTES,
    SCHOOL_ID_PATTERN,
    ChangeBatch,
    SnapshotChunk,
    SnapshotManifest,
    error_summary,
)

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
ENVELOPE_DEPTH = 4  # a manifest is 2 levels deep (its list of chunk hashes)


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


def _skeleton(document: object) -> object:
    """The envelope without the records a change message carries: those are checked one by
    one (``shared.changes``), so one bad record is quarantined, not the whole message."""
    if isinstance(document, dict) and document.get("kind") == "changes" and isinstance(document.get("changes"), list):
        changes = [{**c, "record": None} if isinstance(c, dict) else c for c in document["changes"]]
        return {**document, "changes": changes}
    return document


def read_envelope(body: bytes) -> SnapshotManifest | SnapshotChunk | ChangeBatch | Rejection:
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
            return Rejection(
                "unknown_schema_version", f"schema_version {str(version)[:20]!r}; supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)}"
            )
        school = document.get("school_id")
        if school is not None and not (isinstance(school, str) and re.match(SCHOOL_ID_PATTERN, school)):
            return Rejection("invalid_school_id", f"school_id must match {SCHOOL_ID_PATTERN}")
    try:
        envelope = INGEST_ENVELOPE.validate_python(document)
    except ValidationError as exc:
        return Rejection("invalid_envelope", error_summary(exc))
    if isinstance(envelope, SnapshotChunk):
        try:
            base64.b64decode(envelope.data_b64, validate=True)
        except (binascii.Error, ValueError):
            return Rejection("invalid_chunk", "data_b64 is not valid base64")
    if isinstance(envelope, SnapshotManifest) and len(envelope.chunk_sha256) != envelope.chunk_count:
        return Rejection("invalid_envelope", "chunk_sha256 must list one hash per chunk")
    return envelope
