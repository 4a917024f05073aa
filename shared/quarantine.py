"""Storing quarantine entries: the loader stores what any stage quarantined, and the
coordinator quarantines a complete snapshot's orphans."""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from shared.db import with_retries
from shared.jsonsafe import printable
from shared.messages import QuarantinedRecord

_QUARANTINE = """
INSERT INTO migration.quarantine
  (school_id, snapshot_id, domain, record_index, legacy_id, stage, reason, message, payload, payload_bytes)
SELECT s, sn, d, i, l, st, r, m, p::jsonb, b
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
              $10::bytea[])
       AS q (s, sn, d, i, l, st, r, m, p, b)
ON CONFLICT (school_id, snapshot_id, domain, record_index) DO NOTHING
"""


async def store_quarantine(pool: asyncpg.Pool, records: Sequence[QuarantinedRecord]) -> None:
    """Store quarantine entries (idempotent: one per school, snapshot, domain, record index)."""
    if records:
        await with_retries(lambda: insert_quarantine(pool, records), "store quarantine")


async def insert_quarantine(db: asyncpg.Pool | asyncpg.Connection, records: Sequence[QuarantinedRecord]) -> None:
    """The same on a pool or inside a caller's transaction, once (the caller retries)."""
    if not records:
        return
    # JSON text, cast in SQL: a list-shaped payload inside a jsonb[] parameter would be
    # read as one more array dimension. A payload jsonb cannot hold goes in as bytes.
    columns = [_payload_columns(r.payload) for r in records]
    await db.execute(
        _QUARANTINE,
        [r.school_id for r in records],
        [r.snapshot_id for r in records],
        [r.domain.value for r in records],
        [r.index for r in records],
        [_printable(r.legacy_id) for r in records],
        [r.stage.value for r in records],
        [printable(r.reason) for r in records],
        [printable(r.message) for r in records],
        [text for text, _ in columns],
        [raw for _, raw in columns],
    )


def _payload_columns(payload: object) -> tuple[str | None, bytes | None]:
    """(jsonb text, or None; the JSON as bytes when jsonb cannot hold it: NUL, NaN, a lone
    surrogate). Whatever the payload holds, one of the two keeps it; never an exception."""
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        if "\\u0000" not in text:
            text.encode("utf-8")  # a lone surrogate cannot be sent as text
            return text, None
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return None, json.dumps(payload, ensure_ascii=True, default=repr).encode()
    except (ValueError, TypeError, RecursionError):
        return None, b'"(the payload could not be kept as JSON; the verified backup holds it)"'


def _printable(text: str | None) -> str | None:
    return None if text is None else printable(text)
