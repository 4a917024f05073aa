"""A school's data rebuilt from PostgreSQL as a file the app can load: the way back after a
cutover.

Every live record (not soft-deleted) of the school is read back from its rows through the
reverse mapping (``shared.mapping.reverse_record``), which rebuilds each source record
exactly as it was read (values and their JSON types; ``extras`` keep what no column does).
The records are laid out in one of the two formats ingest reads (``SnapshotFormat``), in
their source order (a snapshot's records by their position, records created by changes
after them, oldest first). A record that never changed comes back equal to its source
record; one a change updated comes back as that change left it.

``mockdata_export`` (the MockDataService ``exportData()`` shape) has keys for six domains
only; the others' records cannot be carried in it and are reported as left out.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.catalog.domains import EXPORT_KEYS, LOCALSTORAGE_KEYS, Domain
from shared.catalog.tables import DOMAIN_TABLES
from shared.ledger.deletions import live_sql
from shared.ledger.records import source_positions
from shared.mapping import reverse_record
from shared.wire.messages import SnapshotFormat

Records = dict[Domain, list[dict[str, Any]]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY_OF = {
    SnapshotFormat.LOCALSTORAGE_DUMP: {domain: key for key, domain in LOCALSTORAGE_KEYS.items()},
    SnapshotFormat.MOCKDATA_EXPORT: {domain: key for key, domain in EXPORT_KEYS.items()},
}


def export_document(records: Records, fmt: SnapshotFormat, taken_at: datetime) -> tuple[bytes, dict[Domain, int]]:
    """The file's bytes, and per domain the records the format cannot carry (left out)."""
    keys = _KEY_OF[fmt]
    left_out = {d: len(rs) for d, rs in records.items() if d not in keys and rs}
    stamp = taken_at.isoformat()
    document: dict[str, Any] = {}
    for domain, key in keys.items():
        values = records.get(domain, [])
        document[key] = json.dumps(values, ensure_ascii=False) if fmt is SnapshotFormat.LOCALSTORAGE_DUMP else values
    if fmt is SnapshotFormat.LOCALSTORAGE_DUMP:
        document["mockDataMetadata"] = json.dumps({"lastUpdated": stamp})
    else:
        document["lastUpdated"] = stamp
    return json.dumps(document, ensure_ascii=False).encode(), left_out


async def live_records(pool: asyncpg.Pool, school_id: str) -> Records:
    """Every record of the school the tables hold and no deletion marks, rebuilt, in source order."""
    out: Records = {}
    for domain, tables in DOMAIN_TABLES.items():
        rows: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for table, role in tables:
            # Table names come from the fixed catalogue; the school and role are parameters.
            where = "t.school_id = $1" + (" AND t.role = $2" if role else "")
            found = await pool.fetch(
                f"SELECT t.* FROM {table} t WHERE {where} AND {live_sql('t')} ORDER BY t.id",
                school_id,
                *([role] if role else []),
            )
            for row in found:
                rows.setdefault(row["legacy_id"], []).append((table, {k: v for k, v in row.items() if k != "deleted_at"}))
        placed = await source_positions(pool, school_id, domain, list(rows))
        position = {legacy_id: (index is None, index or 0, ts or _EPOCH, legacy_id) for legacy_id, (index, ts) in placed.items()}
        out[domain] = [reverse_record(domain, rows[legacy_id]) for legacy_id in sorted(rows, key=position.__getitem__)]
    return out
