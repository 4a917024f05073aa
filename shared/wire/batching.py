"""Packing records into batch messages, bounded by count and bytes, and reading them back. Pure.

The unit on the internal topics is a batch of one (school, snapshot, domain)'s records
(see ``shared.wire.messages``, *batches on the wire*). Each entry is encoded once, its size is
then known exactly, and a message is the header's JSON with the entries spliced in:
nothing is encoded twice, and no message grows past ``max_bytes`` unless a single entry
does (that one goes alone; what may enter a batch at all is bounded upstream by the
record-size limit).

The codec is pydantic-core's JSON, chosen by measurement (``tests/bench/bench_codec.py``,
``.bench/codec.json``): it reads and writes integers of any size exactly (orjson reads
them as floats, losing digits, and refuses to write them), and its validating parser
checks a batch's shape in the same pass that decodes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import to_json

from shared.catalog.domains import Domain
from shared.failures.policy import Unusable
from shared.platform.kafka import UNREADABLE
from shared.platform.signing import SERVICE, Keyring, Refused
from shared.wire.messages import (
    Barrier,
    ChangeMeta,
    QuarantineBatch,
    QuarantinedRecord,
    RawBatch,
    RowsBatch,
    TargetRow,
    error_summary,
)

Internal = Barrier | RawBatch | RowsBatch | QuarantineBatch
_INTERNAL: TypeAdapter[Internal] = TypeAdapter(Annotated[Internal, Field(discriminator="kind")])

_ENTRIES = b',"entries":['


def encode(value: Any) -> bytes:
    """One value as JSON; non-finite floats as ``null`` (what the pydantic models write)."""
    return to_json(value, inf_nan_mode="null")


def header(
    kind: str,
    school_id: str,
    snapshot_id: str,
    domain: Domain,
    source_ts: datetime,
    default_ts: datetime | None = None,
    timezone: str | None = None,
) -> dict[str, Any]:
    """The shared part of a ``raw.batch`` or ``rows.batch``: what every entry's record has in
    common (a raw batch's ``default_ts``, the stable time for records without timestamps, and
    ``timezone``, the school's, see ``shared.catalog.timezones``)."""
    head = {
        "kind": kind,
        "school_id": school_id,
        "snapshot_id": snapshot_id,
        "domain": domain.value,
        "source_ts": source_ts.isoformat(),
    }
    if default_ts is not None:
        head["default_ts"] = default_ts.isoformat()
    if timezone is not None:
        head["timezone"] = timezone
    return head


def quarantine_header(school_id: str) -> dict[str, Any]:
    """The shared part of a ``quarantine.batch``."""
    return {"kind": "quarantine.batch", "school_id": school_id}


# One encoder per entry kind, used by every producer of it (ingest's fan-out and changes,
# transform, the coordinator's hand-back): the entries the models of ``shared.wire.messages``
# read back (``RawEntry``, ``MappedEntry``, ``QuarantinedRecord``).


def raw_entry(
    index: int,
    legacy_id: str | None,
    record: Any,
    hints: Mapping[str, str],
    *,
    ts: datetime | None = None,
    change: ChangeMeta | None = None,
) -> bytes:
    """A ``RawEntry``: one source record in a ``raw.batch`` (``ts``: its own version time
    when it is not the batch's; ``change``: what makes it a change)."""
    fields: dict[str, Any] = {"index": index, "legacy_id": legacy_id, "record": record, "hints": hints}
    if ts is not None:
        fields["ts"] = ts.isoformat()
    if change is not None:
        fields["change"] = change.model_dump(mode="json")
    return encode(fields)


def rows_entry(
    index: int,
    legacy_id: str,
    rows: Sequence[Mapping[str, Any] | TargetRow],
    *,
    ts: datetime | None = None,
    change: ChangeMeta | None = None,
) -> bytes:
    """A ``MappedEntry``: one record's target rows in a ``rows.batch`` (a delete has none)."""
    fields: dict[str, Any] = {
        "index": index,
        "legacy_id": legacy_id,
        "rows": [row.model_dump() if isinstance(row, TargetRow) else row for row in rows],
    }
    if ts is not None:
        fields["ts"] = ts.isoformat()
    if change is not None:
        fields["change"] = change.model_dump(mode="json")
    return encode(fields)


def quarantine_entry(record: QuarantinedRecord, limit: int | None = None) -> bytes:
    """A ``QuarantinedRecord`` in a ``quarantine.batch``; without its payload when the payload
    cannot travel (it cannot be encoded: a lone surrogate, too deep; or the entry would be
    larger than ``limit``). The verified backup, or the stored change, keeps it. What is left
    (ids, reason, message) is not checked against ``limit`` again: ingest bounds ids."""
    try:
        entry = encode(record)
    except ValueError:  # pydantic-core's serialization error
        why = "it cannot be encoded as JSON"
    else:
        if limit is None or len(entry) <= limit:
            return entry
        why = f"{len(entry)} bytes, over SCHOOLMIG_MAX_RECORD_BYTES"
    note = f"{record.message} (payload left out: {why}; the verified backup or the stored change keeps it)"
    return encode(record.model_copy(update={"payload": None, "message": note}))


def pack(header: dict[str, Any], entries: Iterable[bytes], *, max_records: int, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Messages ``{**header, "entries": [...]}`` (with how many entries each holds) of at most
    ``max_records`` entries and, unless one entry alone is larger, ``max_bytes`` bytes; in
    order, every entry exactly once."""
    head = encode(header)[:-1] + _ENTRIES  # '{"kind":…,"domain":…' + ',"entries":['
    fixed = len(head) + 2  # ']}'
    chunk: list[bytes] = []
    size = fixed
    for entry in entries:
        grown = size + len(entry) + (1 if chunk else 0)
        if chunk and (len(chunk) >= max_records or grown > max_bytes):
            yield head + b",".join(chunk) + b"]}", len(chunk)
            chunk, grown = [], fixed + len(entry)
        chunk.append(entry)
        size = grown
    if chunk:
        yield head + b",".join(chunk) + b"]}", len(chunk)


def decode(body: bytes) -> Internal:
    """An internal message, validated (raises ``pydantic.ValidationError`` when it is none)."""
    return _INTERNAL.validate_json(body)


def unreadable(record: Any) -> str | None:
    """Why ``record`` is a placeholder for one the Kafka client could not parse (see
    ``shared.platform.kafka``), or None."""
    for key, value in record.headers or ():
        if key == UNREADABLE:
            return bytes(value or b"").decode("utf-8", "replace")
    return None


def signed_by(record: Any, body: bytes, keyring: Keyring, *, allowed: tuple[str, ...] = (SERVICE,)) -> str | Unusable:
    """Who signed ``body`` (read at ``record``, with its headers), if an ``allowed`` principal
    did; else why it is :class:`Unusable` (a placeholder, or a signature refused)."""
    if (why := unreadable(record)) is not None:
        return Unusable("unreadable_record", why)
    principal = keyring.verify(record.topic, body, record.headers, allowed=allowed)
    if isinstance(principal, Refused):
        return Unusable(principal.reason, principal.detail, refused=True)
    return principal


def read_signed(record: Any, body: bytes, keyring: Keyring, *kinds: type[Internal]) -> Internal | Unusable:
    """:func:`read`, for a message a service signed (``record``: where it was read, with its
    headers); an unsigned or forged one is :class:`Unusable`, never acted on."""
    principal = signed_by(record, body, keyring)
    return principal if isinstance(principal, Unusable) else read(body, *kinds)


def read(body: bytes, *kinds: type[Internal]) -> Barrier | RawBatch | RowsBatch | QuarantineBatch | Unusable:
    """The message, if it is a barrier or one of ``kinds``; else why not (for the dead letter)."""
    try:
        message = decode(body)
    except ValidationError as exc:
        return Unusable("invalid_internal_message", error_summary(exc, empty="not a message of this pipeline"))
    if not isinstance(message, (Barrier, *kinds)):
        return Unusable("unexpected_kind", f"a {message.kind} on a topic that carries {', '.join(k.__name__ for k in kinds)}")
    return message
